// Alpha Panda dashboard: vanilla JS, no build step, no third-party code.
// Every value from the API goes into the DOM through textContent, never innerHTML.
"use strict";

(() => {
  const TOKEN_KEY = "alpha-panda.session";
  const SELECTED_KEY = "alpha-panda.selected";
  const HISTORY_CAP = 2000;
  const DETAIL_EVERY_MS = 1000;
  const LISTS_EVERY_MS = 3000;

  const state = {
    session: null, // {token, expiresAt, username}
    portfolios: [],
    selected: null,
    stream: null,
    reconnectTimer: null,
    expiryTimer: null,
    history: new Map(), // strategy_id -> [{t: Date, v: Number}]
    detailPending: false,
    lastDetailAt: 0,
    lastListsAt: 0,
  };

  const $ = (id) => document.getElementById(id);

  // -- formatting -------------------------------------------------------------------

  // Indian digit grouping (12,34,567.89) done on the decimal string, so no float rounding.
  function money(value) {
    if (value === null || value === undefined) return "—";
    const text = String(value);
    const negative = text.startsWith("-");
    const [whole, fraction = "00"] = (negative ? text.slice(1) : text).split(".");
    let grouped = whole;
    if (whole.length > 3) {
      const head = whole.slice(0, -3);
      grouped = head.replace(/\B(?=(\d{2})+(?!\d))/g, ",") + "," + whole.slice(-3);
    }
    return (negative ? "-" : "") + grouped + "." + fraction;
  }

  function signedMoney(value) {
    const text = money(value);
    return isZero(value) || text.startsWith("-") ? text : "+" + text;
  }

  function isZero(value) {
    return /^-?0+(\.0+)?$/.test(String(value));
  }

  function pnlClass(value) {
    if (value === null || value === undefined || isZero(value)) return "";
    return String(value).startsWith("-") ? "loss" : "gain";
  }

  function time(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
  }

  function setText(el, text, cls) {
    el.textContent = text;
    if (cls !== undefined) {
      el.classList.remove("gain", "loss");
      if (cls) el.classList.add(cls);
    }
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function fillRows(tbody, rows, columns, emptyText) {
    const fresh = document.createDocumentFragment();
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell(emptyText);
      td.colSpan = columns;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const c of cells) tr.appendChild(c);
      fresh.appendChild(tr);
    }
    tbody.replaceChildren(fresh);
  }

  // -- session ----------------------------------------------------------------------

  function loadSession() {
    try {
      const raw = sessionStorage.getItem(TOKEN_KEY);
      const session = raw ? JSON.parse(raw) : null;
      if (session && new Date(session.expiresAt).getTime() > Date.now()) return session;
    } catch (_) {
      /* a corrupt entry is the same as none */
    }
    sessionStorage.removeItem(TOKEN_KEY);
    return null;
  }

  function showLogin(message) {
    $("app-view").hidden = true;
    $("session").hidden = true;
    $("login-view").hidden = false;
    setText($("login-error"), message || "");
    $("username").focus();
  }

  function logout(message) {
    closeStream();
    clearTimeout(state.expiryTimer);
    state.session = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }

  class AuthError extends Error {}

  async function api(path) {
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + state.session.token },
      cache: "no-store",
    });
    if (response.status === 401) {
      logout("Your session has ended; sign in again.");
      throw new AuthError("unauthorized");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      throw new Error(message);
    }
    return body;
  }

  async function login(event) {
    event.preventDefault();
    const button = $("login-submit");
    button.disabled = true;
    setText($("login-error"), "");
    try {
      const response = await fetch("/api/v1/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: $("username").value, password: $("password").value }),
      });
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        let message = body && body.error ? body.error.message : "sign-in failed (" + response.status + ")";
        if (response.status === 429) message = "Too many attempts. " + message;
        setText($("login-error"), message);
        return;
      }
      state.session = {
        token: body.access_token,
        expiresAt: body.expires_at,
        username: $("username").value,
      };
      sessionStorage.setItem(TOKEN_KEY, JSON.stringify(state.session));
      $("password").value = "";
      start();
    } catch (err) {
      setText($("login-error"), "Cannot reach the server: " + err.message);
    } finally {
      button.disabled = false;
    }
  }

  // -- rendering --------------------------------------------------------------------

  function banner(message) {
    const el = $("banner");
    el.hidden = !message;
    el.textContent = message || "";
  }

  function setLive(mode) {
    const pill = $("live-status");
    const labels = { live: "live", reconnecting: "reconnecting…", off: "offline" };
    pill.textContent = labels[mode] || mode;
    pill.className = "pill " + (mode === "live" ? "pill-live" : mode === "off" ? "pill-off" : "pill-poll");
  }

  function card(row) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "strategy";
    button.dataset.strategy = row.strategy_id;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = row.strategy_id;
    const equity = document.createElement("div");
    equity.className = "equity";
    equity.dataset.field = "equity";
    button.append(name, equity);
    for (const [field, label] of [
      ["cash", "Cash"],
      ["realised_pnl", "Realised"],
      ["unrealised_pnl", "Unrealised"],
      ["net_pnl", "Net P&L"],
      ["trade_count", "Trades"],
    ]) {
      const line = document.createElement("div");
      line.className = "row";
      const l = document.createElement("span");
      l.textContent = label;
      const v = document.createElement("span");
      v.dataset.field = field;
      line.append(l, v);
      button.appendChild(line);
    }
    button.addEventListener("click", () => select(row.strategy_id));
    return button;
  }

  function renderCards() {
    const container = $("cards");
    const seen = new Set();
    for (const row of state.portfolios) {
      seen.add(row.strategy_id);
      let el = container.querySelector(`[data-strategy="${CSS.escape(row.strategy_id)}"]`);
      if (!el) {
        el = card(row);
        container.appendChild(el);
      }
      const field = (name) => el.querySelector(`[data-field="${name}"]`);
      setText(field("equity"), money(row.equity));
      setText(field("cash"), money(row.cash));
      setText(field("realised_pnl"), signedMoney(row.realised_pnl), pnlClass(row.realised_pnl));
      setText(field("unrealised_pnl"), signedMoney(row.unrealised_pnl), pnlClass(row.unrealised_pnl));
      setText(field("net_pnl"), signedMoney(row.net_pnl), pnlClass(row.net_pnl));
      setText(field("trade_count"), String(row.trade_count));
      el.classList.toggle("selected", row.strategy_id === state.selected);
    }
    for (const el of [...container.children]) {
      if (!seen.has(el.dataset.strategy)) el.remove();
    }
    $("no-portfolios").hidden = state.portfolios.length > 0;
    const sources = new Set(state.portfolios.map((r) => r.source));
    const source = $("source");
    source.hidden = sources.size === 0;
    source.textContent = sources.size ? "from " + [...sources].join(" + ") : "";
    source.title = sources.has("tables")
      ? "Redis is unavailable: read from the worker's tables"
      : "Read from the Redis mirror";
  }

  function renderFigures(row) {
    setText($("detail-title"), row.strategy_id);
    setText($("detail-equity"), money(row.equity));
    setText($("detail-cash"), money(row.cash));
    setText($("detail-realised"), signedMoney(row.realised_pnl), pnlClass(row.realised_pnl));
    setText($("detail-unrealised"), signedMoney(row.unrealised_pnl), pnlClass(row.unrealised_pnl));
    setText($("detail-net"), signedMoney(row.net_pnl), pnlClass(row.net_pnl));
    setText($("detail-fees"), money(row.fees_paid));
  }

  function renderPositions(positions) {
    const rows = positions.map((p) => [
      cell(p.symbol),
      cell(String(p.quantity), "num"),
      cell(money(p.avg_price), "num"),
      cell(money(p.last_price) + (p.priced ? "" : " *"), "num"),
      cell(money(p.market_value), "num"),
      cell(signedMoney(p.unrealised_pnl), "num " + pnlClass(p.unrealised_pnl)),
      cell(signedMoney(p.realised_pnl), "num " + pnlClass(p.realised_pnl)),
    ]);
    fillRows($("positions").tBodies[0], rows, 7, "No positions");
  }

  function renderFills(fills) {
    const rows = fills.map((f) => [
      cell(time(f.filled_ts)),
      cell(f.side, "side-" + f.side),
      cell(f.symbol),
      cell(String(f.quantity), "num"),
      cell(money(f.fill_price), "num"),
      cell(money(f.fees), "num"),
      cell(f.reason || "", "wrap"),
    ]);
    fillRows($("fills").tBodies[0], rows, 7, "No fills yet");
  }

  function renderRejections(rejections) {
    const rows = rejections.map((r) => [
      cell(time(r.rejected_ts)),
      cell(r.strategy_id),
      cell(`${r.side} ${r.quantity} ${r.symbol}`, "side-" + r.side),
      cell(r.reason),
      cell(r.detail, "wrap"),
    ]);
    fillRows($("rejections").tBodies[0], rows, 5, "No rejected signals");
  }

  // -- equity chart -----------------------------------------------------------------

  function addPoint(strategyId, when, equity) {
    const value = Number(equity);
    if (!Number.isFinite(value)) return;
    const series = state.history.get(strategyId) || [];
    const last = series[series.length - 1];
    if (last && last.v === value) return;
    series.push({ t: when, v: value });
    if (series.length > HISTORY_CAP) series.splice(0, series.length - HISTORY_CAP);
    state.history.set(strategyId, series);
  }

  function drawChart() {
    const canvas = $("equity-chart");
    const series = state.history.get(state.selected) || [];
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 640;
    const height = canvas.clientHeight || 220;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const css = getComputedStyle(document.documentElement);
    const muted = css.getPropertyValue("--muted").trim() || "#888";
    const accent = css.getPropertyValue("--accent").trim() || "#4fa3ff";
    const line = css.getPropertyValue("--line").trim() || "#333";
    g.font = "11px system-ui, sans-serif";
    if (!series.length) {
      g.fillStyle = muted;
      g.fillText("No equity samples yet", 12, height / 2);
      return;
    }
    const pad = { left: 84, right: 12, top: 10, bottom: 22 };
    let lo = Math.min(...series.map((p) => p.v));
    let hi = Math.max(...series.map((p) => p.v));
    if (hi - lo < 1) {
      lo -= 1;
      hi += 1;
    }
    const t0 = series[0].t.getTime();
    const t1 = Math.max(series[series.length - 1].t.getTime(), t0 + 1000);
    const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
    const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);

    g.strokeStyle = line;
    g.lineWidth = 1;
    g.fillStyle = muted;
    for (const v of [lo, (lo + hi) / 2, hi]) {
      g.beginPath();
      g.moveTo(pad.left, y(v));
      g.lineTo(width - pad.right, y(v));
      g.stroke();
      g.fillText(money(v.toFixed(2)), 4, y(v) + 4);
    }
    g.fillText(time(series[0].t), pad.left, height - 6);
    const endLabel = time(new Date(t1));
    g.fillText(endLabel, width - pad.right - g.measureText(endLabel).width, height - 6);

    g.strokeStyle = accent;
    g.lineWidth = 2;
    g.beginPath();
    series.forEach((p, i) => (i ? g.lineTo(x(p.t.getTime()), y(p.v)) : g.moveTo(x(p.t.getTime()), y(p.v))));
    if (series.length === 1) g.lineTo(width - pad.right, y(series[0].v));
    g.stroke();
    const lastPoint = series[series.length - 1];
    g.fillStyle = accent;
    g.beginPath();
    g.arc(series.length === 1 ? width - pad.right : x(lastPoint.t.getTime()), y(lastPoint.v), 3, 0, 2 * Math.PI);
    g.fill();
  }

  async function loadEquity(strategyId) {
    const body = await api(`/api/v1/portfolios/${encodeURIComponent(strategyId)}/equity`);
    const series = body.samples.map((s) => ({ t: new Date(s.ts), v: Number(s.equity) }));
    // Keep live points newer than the mirror's last sample.
    const mirroredUntil = series.length ? series[series.length - 1].t.getTime() : 0;
    const live = (state.history.get(strategyId) || []).filter((p) => p.t.getTime() > mirroredUntil);
    state.history.set(strategyId, series.concat(live).slice(-HISTORY_CAP));
    $("equity-note").textContent =
      body.source === "redis"
        ? "Samples from the Redis mirror, then live updates."
        : "Redis unavailable: live updates since this page loaded.";
    drawChart();
  }

  // -- data flow --------------------------------------------------------------------

  async function refreshDetail() {
    const strategyId = state.selected;
    if (!strategyId) return;
    state.lastDetailAt = Date.now();
    const detail = await api(`/api/v1/portfolios/${encodeURIComponent(strategyId)}`);
    if (strategyId !== state.selected) return;
    renderFigures(detail);
    renderPositions(detail.positions);
  }

  async function refreshLists() {
    const strategyId = state.selected;
    state.lastListsAt = Date.now();
    const [fills, rejections] = await Promise.all([
      strategyId ? api(`/api/v1/portfolios/${encodeURIComponent(strategyId)}/fills?limit=20`) : null,
      api("/api/v1/signals/rejected?limit=20"),
    ]);
    if (fills && strategyId === state.selected) renderFills(fills.fills);
    renderRejections(rejections.rejections);
  }

  function report(err) {
    if (err instanceof AuthError) return;
    banner("Could not load data: " + err.message);
  }

  // Coalesce bursts of stream events into at most one detail refresh per second.
  function scheduleRefresh() {
    if (state.detailPending) return;
    state.detailPending = true;
    const wait = Math.max(0, state.lastDetailAt + DETAIL_EVERY_MS - Date.now());
    setTimeout(async () => {
      state.detailPending = false;
      if (!state.session) return;
      try {
        await refreshDetail();
        if (Date.now() - state.lastListsAt >= LISTS_EVERY_MS) await refreshLists();
        banner("");
      } catch (err) {
        report(err);
      }
    }, wait);
  }

  function onPortfolios(rows) {
    state.portfolios = rows;
    const now = new Date();
    for (const row of rows) addPoint(row.strategy_id, now, row.equity);
    if (!state.selected || !rows.some((r) => r.strategy_id === state.selected)) {
      if (rows.length) select(rows[0].strategy_id);
    }
    renderCards();
    const current = rows.find((r) => r.strategy_id === state.selected);
    if (current) {
      renderFigures(current); // the summary already carries every headline figure
      drawChart();
      scheduleRefresh();
    }
    $("detail").hidden = !current;
  }

  async function select(strategyId) {
    if (state.selected === strategyId) return;
    state.selected = strategyId;
    sessionStorage.setItem(SELECTED_KEY, strategyId);
    renderCards();
    const current = state.portfolios.find((r) => r.strategy_id === strategyId);
    if (current) renderFigures(current);
    $("detail").hidden = !current;
    try {
      await Promise.all([refreshDetail(), refreshLists(), loadEquity(strategyId)]);
    } catch (err) {
      report(err);
    }
  }

  function closeStream() {
    clearTimeout(state.reconnectTimer);
    if (state.stream) state.stream.close();
    state.stream = null;
  }

  function openStream() {
    closeStream();
    const url = "/api/v1/stream?access_token=" + encodeURIComponent(state.session.token);
    const stream = new EventSource(url);
    state.stream = stream;
    stream.addEventListener("open", () => {
      setLive("live");
      banner("");
    });
    stream.addEventListener("portfolios", (event) => onPortfolios(JSON.parse(event.data).portfolios));
    stream.addEventListener("unavailable", (event) => banner(JSON.parse(event.data).error.message));
    stream.addEventListener("unauthorized", () => logout("Your session has ended; sign in again."));
    stream.addEventListener("error", () => {
      if (stream !== state.stream) return;
      if (stream.readyState === EventSource.CONNECTING) {
        setLive("reconnecting");
        return;
      }
      // Closed for good (e.g. the server said 401): find out why, then retry.
      setLive("off");
      state.reconnectTimer = setTimeout(async () => {
        try {
          await api("/api/v1/portfolios"); // logs out on 401
          openStream();
        } catch (err) {
          report(err);
          if (state.session) state.reconnectTimer = setTimeout(openStream, 3000);
        }
      }, 1000);
    });
  }

  async function start() {
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("session").hidden = false;
    setText($("whoami"), state.session.username || "");
    setLive("reconnecting");
    clearTimeout(state.expiryTimer);
    const remaining = new Date(state.session.expiresAt).getTime() - Date.now();
    state.expiryTimer = setTimeout(() => logout("Your session has expired; sign in again."), remaining);
    state.selected = null;
    const remembered = sessionStorage.getItem(SELECTED_KEY);
    try {
      const body = await api("/api/v1/portfolios");
      const rows = body.portfolios;
      state.portfolios = rows;
      const initial = rows.find((r) => r.strategy_id === remembered) || rows[0];
      if (initial) await select(initial.strategy_id);
      else await refreshLists();
      onPortfolios(rows);
    } catch (err) {
      report(err);
    }
    if (state.session) openStream();
  }

  window.addEventListener("resize", () => drawChart());
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => logout(""));
    state.session = loadSession();
    if (state.session) start();
    else showLogin("");
  });
})();
