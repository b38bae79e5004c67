"""Pure domain logic: strategy host, risk rules and policy, session rules, paper execution, fees.

Nothing here imports Faust, aiokafka, Redis, SQLAlchemy or aiohttp (checked by the layering
contract in pyproject.toml, run by ``make lint``), so the same code runs in a stage, a backtest
and a unit test.
"""
