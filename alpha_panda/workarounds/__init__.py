"""Workarounds for defects of the libraries and the embedded broker we run on.

One module per defect. Each names the defect, the versions it was checked against (and
refuses to load on any other), and the test that proves it is still needed.
"""
