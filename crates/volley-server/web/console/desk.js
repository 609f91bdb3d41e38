// The agent console: keeps the queue lists and an open conversation live over the
// server's streams (/api/desk/stream, /api/handoffs/{id}/stream) and performs every
// action through the agents' JSON API. Plain script, no build step, nothing loaded
// from anywhere but this server.
//
// Safety: whatever a participant (or a flow) wrote goes into the page as text
// (textContent). The only HTML inserted is a message's or note's `html`, which the
// server rendered from Markdown with its safe renderer.
(function () {
  "use strict";

  var dataEl = document.getElementById("page-data");
  if (!dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var csrfMeta = document.querySelector('meta[name="csrf"]');
  var csrf = csrfMeta ? csrfMeta.content : "";
  var me = data.me;
  var admin = me.role === "admin";
  var names = Object.assign({}, data.names || {});
  var maxRows = data.max_rows || 200;
  // The server's clock minus ours: wait times agree with the server's.
  var skew = (data.now || Date.now()) - Date.now();
  function serverNow() { return Date.now() + skew; }

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // ------------------------------------------------------------------ text helpers

  /** "just now", "4 min", "2 h 5 min", "3 d" (as the server writes them). */
  function durationText(ms) {
    var min = Math.floor(Math.max(0, ms) / 60000);
    if (min === 0) return "just now";
    if (min < 60) return min + " min";
    if (min < 1440) return Math.floor(min / 60) + " h" + (min % 60 ? " " + (min % 60) + " min" : "");
    return Math.floor(min / 1440) + " d";
  }

  function localTime(ms) {
    var d = new Date(ms);
    var today = new Date();
    var sameDay = d.toDateString() === today.toDateString();
    try {
      return sameDay
        ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
        : d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    } catch (_) {
      return d.toLocaleString();
    }
  }

  function timeEl(ms) {
    var t = el("time", null, localTime(ms));
    t.dateTime = new Date(ms).toISOString();
    t.dataset.at = String(ms);
    return t;
  }

  function localizeTimes(root) {
    var ts = (root || document).querySelectorAll("time[data-at]");
    for (var i = 0; i < ts.length; i++) ts[i].textContent = localTime(Number(ts[i].dataset.at));
  }

  function tickSince() {
    var spans = document.querySelectorAll(".since[data-since]");
    var now = serverNow();
    for (var i = 0; i < spans.length; i++) {
      var s = spans[i];
      s.textContent = (s.dataset.prefix || "") + durationText(now - Number(s.dataset.since)) + (s.dataset.suffix || "");
    }
  }

  // ------------------------------------------------------------------ errors

  var alertBox = $("alert");

  function showError(e) {
    if (!alertBox) return;
    var msg = (e && e.message) || "Something went wrong.";
    if (e && e.code && e.code !== "network") msg += " (" + e.code + ")";
    alertBox.querySelector(".text").textContent = msg;
    alertBox.hidden = false;
  }

  function clearError() {
    if (alertBox) alertBox.hidden = true;
  }

  if (alertBox) alertBox.querySelector(".dismiss").addEventListener("click", clearError);

  // ------------------------------------------------------------------ the API

  /** A JSON request; rejects with an Error carrying the API's `code` and `message`. */
  function api(method, path, body) {
    var init = {
      method: method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf }
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(
      function (res) {
        if (res.status === 401) {
          location.href = "/console/login";
          var gone = new Error("Your session has ended: sign in again.");
          gone.code = "unauthorized";
          throw gone;
        }
        if (res.status === 204) return null;
        return res.text().then(function (text) {
          var json = null;
          try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
          if (!res.ok) {
            var err = new Error((json && json.message) || "The server answered " + res.status + ".");
            err.code = (json && json.code) || String(res.status);
            err.status = res.status;
            throw err;
          }
          return json;
        });
      },
      function () {
        var err = new Error("The server cannot be reached. Check the connection and try again.");
        err.code = "network";
        throw err;
      }
    );
  }

  /** An action: errors show in the alert region; resolves to null on failure. */
  function act(method, path, body) {
    clearError();
    return api(method, path, body).catch(function (e) {
      showError(e);
      return null;
    });
  }

  // ------------------------------------------------------------------ sound, notifications, title

  var audio = null;

  function audioContext() {
    var C = window.AudioContext || window.webkitAudioContext;
    if (!C) return null;
    if (!audio) {
      try { audio = new C(); } catch (_) { return null; }
    }
    if (audio.state === "suspended") audio.resume().catch(function () {});
    return audio;
  }

  // Browsers start audio only after a user gesture: the first click or key prepares it.
  function unlockAudio() {
    audioContext();
    document.removeEventListener("pointerdown", unlockAudio, true);
    document.removeEventListener("keydown", unlockAudio, true);
  }
  document.addEventListener("pointerdown", unlockAudio, true);
  document.addEventListener("keydown", unlockAudio, true);

  /** A short two-note chime, synthesised (no audio file). */
  function chime() {
    var ctx = audioContext();
    if (!ctx) return;
    var t = ctx.currentTime;
    [[660, 0], [880, 0.16]].forEach(function (n) {
      var o = ctx.createOscillator();
      var g = ctx.createGain();
      o.type = "sine";
      o.frequency.value = n[0];
      g.gain.setValueAtTime(0.0001, t + n[1]);
      g.gain.exponentialRampToValueAtTime(0.25, t + n[1] + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, t + n[1] + 0.3);
      o.connect(g);
      g.connect(ctx.destination);
      o.start(t + n[1]);
      o.stop(t + n[1] + 0.32);
    });
  }

  var notifyBtn = $("notify");

  function updateNotifyButton() {
    if (!notifyBtn) return;
    notifyBtn.hidden = !("Notification" in window) || Notification.permission !== "default";
  }

  if (notifyBtn) {
    notifyBtn.addEventListener("click", function () {
      var p = Notification.requestPermission(updateNotifyButton);
      if (p && p.then) p.then(updateNotifyButton);
    });
    updateNotifyButton();
  }

  var unseen = 0;
  var baseTitle = document.title;

  function attentive() {
    return !document.hidden && document.hasFocus();
  }

  function updateTitle() {
    var base = baseTitle;
    if (data.page === "queue" && desk.ready) {
      var mine = 0, waiting = 0;
      desk.open.forEach(function (h) {
        if (h.status === "queued") waiting++;
        else if (h.status === "assigned" && h.agent === me.id) mine++;
      });
      base = mine + " mine, " + waiting + " waiting · Volley console";
    }
    document.title = (unseen ? "(" + unseen + ") " : "") + base;
  }

  function seen() {
    if (unseen && attentive()) {
      unseen = 0;
      updateTitle();
    }
  }
  window.addEventListener("focus", seen);
  document.addEventListener("visibilitychange", seen);

  /** A conversation was just given to me: chime, notify, count. */
  function newAssignment(h) {
    var count = Number(document.body.dataset.assignments || 0) + 1;
    document.body.dataset.assignments = String(count);
    chime();
    if (!attentive()) unseen++;
    updateTitle();
    if ("Notification" in window && Notification.permission === "granted" && !attentive()) {
      try {
        var n = new Notification("New conversation for you", {
          body: (h.queue ? h.queue + ": " : "") + (h.preview || h.reason || ""),
          tag: "volley-" + h.conversation
        });
        n.onclick = function () {
          window.focus();
          location.href = "/console/c/" + encodeURIComponent(h.conversation);
        };
      } catch (_) { /* notifications unavailable in this context */ }
    }
  }

  // ------------------------------------------------------------------ the desk (lists)

  var desk = {
    open: new Map(),
    resolved: data.resolved || [],
    agents: [],
    queues: [],
    ready: false
  };

  var PRIORITY = { low: 0, normal: 1, high: 2, urgent: 3 };

  function waitingOrder(a, b) {
    return (PRIORITY[b.priority] - PRIORITY[a.priority]) ||
      (a.requested_at - b.requested_at) ||
      (a.conversation < b.conversation ? -1 : a.conversation > b.conversation ? 1 : 0);
  }

  var LISTS = {
    waiting: {
      rows: function () { return openWhere(function (h) { return h.status === "queued"; }).sort(waitingOrder); }
    },
    mine: {
      rows: function () {
        return openWhere(function (h) { return h.status === "assigned" && h.agent === me.id; })
          .sort(function (a, b) { return b.last_message_at - a.last_message_at; });
      }
    },
    snoozed: {
      rows: function () {
        return openWhere(function (h) { return h.status === "snoozed" && (admin || h.agent === me.id); })
          .sort(function (a, b) { return (a.snoozed_until || 0) - (b.snoozed_until || 0); });
      }
    },
    all: { rows: function () { return openWhere(function () { return true; }).sort(waitingOrder); } },
    resolved: { rows: function () { return desk.resolved.slice(); } }
  };

  function openWhere(pred) {
    var out = [];
    desk.open.forEach(function (h) { if (pred(h)) out.push(h); });
    return out;
  }

  function agentName(id) {
    if (!id) return "";
    if (id === me.id) return me.name;
    return names[id] || "another agent";
  }

  function since(ms, prefix, suffix) {
    var s = el("span", "since", prefix + durationText(serverNow() - ms) + (suffix || ""));
    s.dataset.since = String(ms);
    s.dataset.prefix = prefix;
    if (suffix) s.dataset.suffix = suffix;
    return s;
  }

  function rowEl(h, key) {
    var li = el("li", "row status-" + h.status);
    li.dataset.conversation = h.conversation;
    var a = el("a");
    a.href = "/console/c/" + encodeURIComponent(h.conversation);
    if (h.conversation === data.conversation) a.setAttribute("aria-current", "page");
    a.appendChild(el("span", "preview", h.preview || h.reason || "(no message)"));
    var meta = el("span", "meta");
    meta.appendChild(el("span", "queue", h.queue));
    if (h.priority && h.priority !== "normal") {
      meta.append(" ", el("span", "prio prio-" + h.priority, h.priority));
    }
    if (key === "waiting") meta.append(" ", since(h.requested_at, "waiting "));
    else if (key === "mine" || key === "all") meta.append(" ", since(h.last_message_at, "last message "));
    else if (key === "snoozed" && h.snoozed_until) {
      var u = el("span", "until", "until ");
      u.appendChild(timeEl(h.snoozed_until));
      meta.append(" ", u);
    } else if (key === "resolved") {
      if (h.resolved_at) meta.append(" ", since(h.resolved_at, "resolved ", " ago"));
      if (h.csat) meta.append(" ", el("span", "csat", "rated " + h.csat + "/5"));
    }
    if ((key === "all" || key === "snoozed" || key === "resolved") && h.agent) {
      meta.append(" ", el("span", "agent", agentName(h.agent)));
    }
    (h.tags || []).forEach(function (t) { meta.append(" ", el("span", "tag", t)); });
    a.appendChild(meta);
    li.appendChild(a);
    li.dataset.sig = key + JSON.stringify(h);
    return li;
  }

  var renderQueued = false;

  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(function () {
      renderQueued = false;
      renderDesk();
    });
  }

  /** Re-renders every list on the page; unchanged rows (and the focus) are kept. */
  function renderDesk() {
    var active = document.activeElement;
    var focusedRow = active && active.closest ? active.closest("li.row") : null;
    var focusedId = focusedRow ? focusedRow.dataset.conversation : null;
    var focusedList = focusedRow ? focusedRow.parentNode.id : null;
    Object.keys(LISTS).forEach(function (key) {
      var list = $("list-" + key);
      if (!list) return;
      var rows = LISTS[key].rows();
      var existing = {};
      for (var i = 0; i < list.children.length; i++) {
        var c = list.children[i];
        existing[c.dataset.conversation] = c;
      }
      var shown = rows.slice(0, maxRows).map(function (h) {
        var old = existing[h.conversation];
        var sig = key + JSON.stringify(h);
        return old && old.dataset.sig === sig ? old : rowEl(h, key);
      });
      for (var j = 0; j < shown.length; j++) {
        if (list.children[j] !== shown[j]) list.insertBefore(shown[j], list.children[j] || null);
      }
      while (list.children.length > shown.length) list.removeChild(list.lastChild);
      var count = $("count-" + key);
      if (count) count.textContent = String(rows.length);
      var more = $("more-" + key);
      if (more) {
        more.hidden = rows.length <= maxRows;
        more.textContent = "and " + (rows.length - maxRows) + " more";
      }
      var empty = $("empty-" + key);
      if (empty) empty.hidden = rows.length > 0;
    });
    if (focusedId && document.activeElement !== active) {
      var back = document.querySelector("#" + focusedList + ' li[data-conversation="' + CSS.escape(focusedId) + '"] a');
      if (back) back.focus();
    }
    updateTitle();
  }

  // Availability (available / away).
  var availBtn = $("availability");

  function myAgent() {
    for (var i = 0; i < desk.agents.length; i++) if (desk.agents[i].id === me.id) return desk.agents[i];
    return null;
  }

  function renderPresence() {
    if (!availBtn) return;
    var a = myAgent();
    availBtn.disabled = !a;
    var available = !!(a && a.available);
    availBtn.setAttribute("aria-pressed", available ? "true" : "false");
    availBtn.textContent = available ? "Available" : "Away";
    availBtn.title = available
      ? "Available: new conversations are assigned to you (Alt+A to go away)"
      : "Away: you keep your conversations and get no new ones (Alt+A to be available)";
    availBtn.classList.toggle("away", !available);
  }

  function toggleAvailability() {
    var a = myAgent();
    if (!a || !availBtn) return;
    availBtn.disabled = true;
    act("POST", "/api/desk/status", { available: !a.available }).then(function (agents) {
      if (agents) desk.agents = agents;
      renderPresence();
      renderTransferAgents();
    });
  }

  if (availBtn) availBtn.addEventListener("click", toggleAvailability);

  var liveEl = $("live");

  function setLive(text, on) {
    if (liveEl) {
      liveEl.textContent = text;
      liveEl.classList.toggle("on", !!on);
    }
    document.body.dataset.live = on ? "1" : "";
  }

  // The desk stream: frames that arrive while the snapshot loads are kept and applied
  // after it (each frame is a whole hand-off, so the latest one wins).
  var buffered = null;
  var loading = false;
  var reloadAgain = false;
  var deskRetry = 1000;

  function applyDeskFrame(f) {
    if (f.type === "handoff" && f.handoff) {
      var h = f.handoff;
      var before = desk.open.get(h.conversation);
      var wasMine = before && before.status === "assigned" && before.agent === me.id;
      if (h.status === "resolved") {
        desk.open.delete(h.conversation);
        desk.resolved = [h].concat(desk.resolved.filter(function (r) {
          return r.conversation !== h.conversation;
        })).slice(0, 20);
      } else {
        desk.open.set(h.conversation, h);
      }
      if (h.status === "assigned" && h.agent === me.id && !wasMine && desk.ready) newAssignment(h);
      if (conv && h.conversation === conv.id) conversationChanged(h);
      scheduleRender();
    } else if (f.type === "agents" || f.type === "reload") {
      loadDesk();
    }
  }

  function loadDesk() {
    if (loading) {
      reloadAgain = true;
      return;
    }
    loading = true;
    if (!buffered) buffered = [];
    api("GET", "/api/desk").then(
      function (d) {
        loading = false;
        desk.open = new Map(d.open.map(function (h) { return [h.conversation, h]; }));
        desk.agents = d.agents;
        desk.queues = d.queues;
        d.agents.forEach(function (a) { names[a.id] = a.name; });
        var frames = buffered || [];
        buffered = null;
        var wasReady = desk.ready;
        frames.forEach(applyDeskFrame);
        desk.ready = true;
        if (!wasReady && conv && desk.open.has(conv.id)) conversationChanged(desk.open.get(conv.id));
        renderDesk();
        renderPresence();
        renderTransferAgents();
        setLive("Live", true);
        if (reloadAgain) {
          reloadAgain = false;
          loadDesk();
        }
      },
      function (e) {
        loading = false;
        buffered = null;
        showError(e);
      }
    );
  }

  function connectDesk() {
    buffered = [];
    var es = new EventSource("/api/desk/stream");
    es.onopen = function () {
      deskRetry = 1000;
      loadDesk();
    };
    es.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (_) { return; }
      if (buffered) buffered.push(f);
      else applyDeskFrame(f);
    };
    es.onerror = function () {
      // Reconnect ourselves (and take a fresh snapshot); a refused stream (signed out,
      // not an agent) shows why through the snapshot request.
      es.close();
      setLive("Reconnecting…", false);
      desk.ready = false;
      api("GET", "/api/desk").catch(showError);
      setTimeout(connectDesk, deskRetry);
      deskRetry = Math.min(deskRetry * 2, 30000);
    };
  }

  // ------------------------------------------------------------------ the conversation page

  var conv = data.page === "conversation" ? {
    id: data.conversation,
    handoff: data.handoff,
    lastSeq: data.last_seq || 0,
    canned: data.canned || [],
    noteMode: false
  } : null;

  function convPath(action) {
    return "/api/handoffs/" + encodeURIComponent(conv.id) + "/" + action;
  }

  var INTERNAL = { enter: 1, set: 1, answer: 1, acknowledge: 1, split: 1, goal: 1 };

  function str(v) {
    if (v === null || v === undefined) return "";
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  /** One log entry as a transcript item (the shapes console.rs renders), or null. */
  function renderEntry(f) {
    var kind = f.kind, d = f.data || {};
    if (INTERNAL[kind]) return null;
    var cls = "system", who = null, body = el("div", "body");
    function text(t) { body.textContent = t; }
    function html(h, fallback) {
      if (typeof h === "string") body.innerHTML = h; // server-rendered, safe Markdown
      else body.textContent = fallback || "";
    }
    switch (kind) {
      case "message":
        if (d.from === "agent") {
          cls = "agent";
          who = str(d.agent);
        } else {
          cls = d.invalid ? "bot invalid" : "bot";
          who = "Bot";
        }
        html(d.html, d.text);
        if (d.image) body.appendChild(el("p", "media", "[image: " + str(d.alt || "image") + " — " + str(d.image) + "]"));
        (d.links || []).forEach(function (l) { body.appendChild(el("p", "media", "[link: " + str(l.label) + "]")); });
        break;
      case "ask":
        var labels = (d.options || []).concat(d.items || []).map(function (o) { return str(o.label); });
        text("Asks (" + str(d.input) + ")" + (labels.length ? ": " + labels.join(" · ") : ""));
        break;
      case "input":
        var label = typeof d.label === "string" ? d.label : typeof d.text === "string" ? d.text : null;
        if (label !== null) {
          cls = "participant";
          who = "Participant";
          text(label);
        } else {
          text("(" + str(d.action || "input") + ")");
        }
        break;
      case "handoff":
        text((d.queue ? "Handed off to " + str(d.queue) : "Handed off to a person") + (d.reason ? " — " + str(d.reason) : ""));
        break;
      case "queue": text("Told: " + str(d.text)); break;
      case "assigned": text("Assigned to " + str(d.agent) + " (" + str(d.by) + ")"); break;
      case "note":
        cls = "note";
        who = str(d.agent) + " · private note, only agents see this";
        html(d.html, d.text);
        break;
      case "tags":
        var tags = (d.tags || []).map(str);
        text(tags.length ? "Tags: " + tags.join(", ") : "Tags cleared");
        break;
      case "snoozed":
        body.append("Snoozed until ", timeEl(Number(d.until) || 0));
        break;
      case "woke": text("Back from snooze"); break;
      case "transferred":
        text("Transferred to " + (d.to_agent ? (names[d.to_agent] || "an agent") : "queue " + str(d.queue)));
        break;
      case "resolved":
        text("Resolved by " + str(d.agent) + (d.returned_to ? " — back to the flow at step " + str(d.returned_to) : ""));
        break;
      case "csat_request": text("Asked for a rating (1–5)"); break;
      case "csat": text("Rated " + str(d.score) + "/5"); break;
      case "end": text("Conversation ended (" + str(d.outcome) + ")"); break;
      case "error": text("Error: " + str(d.message)); break;
      default: text(String(kind).replace(/_/g, " "));
    }
    var li = el("li", "entry " + cls);
    li.dataset.seq = String(f.seq);
    li.dataset.kind = kind;
    if (who !== null) li.appendChild(el("div", "who", who));
    li.appendChild(body);
    li.appendChild(timeEl(f.at));
    return li;
  }

  var logEl = $("log");

  function appendEntry(f) {
    var li = renderEntry(f);
    if (!li) return;
    var nearBottom = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 80;
    logEl.appendChild(li);
    if (nearBottom) logEl.scrollTop = logEl.scrollHeight;
  }

  var logRetry = 1000;

  function connectLog() {
    var es = new EventSource(convPath("stream") + "?after=" + conv.lastSeq);
    es.onopen = function () { logRetry = 1000; };
    es.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (_) { return; }
      if (f.type === "entry" && f.seq > conv.lastSeq) {
        conv.lastSeq = f.seq;
        appendEntry(f);
        logEl.dataset.lastSeq = String(f.seq);
      }
    };
    es.onerror = function () {
      // Resume after the last entry shown (never twice, never a gap).
      es.close();
      setTimeout(connectLog, logRetry);
      logRetry = Math.min(logRetry * 2, 30000);
    };
  }

  // State: header, actions and composer follow the hand-off.
  function conversationChanged(h) {
    conv.handoff = h;
    renderConversationState();
  }

  function renderConversationState() {
    var h = conv.handoff;
    var status = $("status");
    if (status && h) {
      status.textContent = h.status;
      status.className = "status status-" + h.status;
    }
    var state = $("state");
    var assignee = $("assignee");
    if (h && h.agent) {
      if (!assignee && state) {
        state.append(" · ");
        assignee = el("span", "agent");
        assignee.id = "assignee";
        state.appendChild(assignee);
      }
      if (assignee) assignee.textContent = agentName(h.agent);
    } else if (assignee) {
      assignee.textContent = "unassigned";
    }
    var open = !!h && h.status !== "resolved";
    var othersAssigned = open && h.agent && h.agent !== me.id;
    var pick = $("pick");
    pick.hidden = !(open && (h.status === "queued" || (othersAssigned && admin)));
    pick.textContent = othersAssigned ? "Take over" : "Pick";
    ["snooze-open", "transfer-open", "resolve", "return-open"].forEach(function (id) {
      $(id).disabled = !open || (othersAssigned && !admin);
    });
    $("tags-save").disabled = !h;
    $("tags-input").disabled = !h;
    if (h && document.activeElement !== $("tags-input")) $("tags-input").value = (h.tags || []).join(" ");
    var canReply = open && !(othersAssigned && !admin);
    var noteBtn = $("note-toggle");
    if (!canReply && !conv.noteMode) setNoteMode(true);
    noteBtn.disabled = !canReply;
    var hint = $("mode-hint");
    if (!canReply) {
      hint.textContent = !h ? "Never handed off: only private notes"
        : !open ? "Resolved: only private notes"
        : "Assigned to " + agentName(h.agent) + ": only private notes";
    } else {
      hint.textContent = conv.noteMode ? "Private note: only agents see this" : "Replying to the participant";
    }
    if (!open) closeMenus();
  }

  // Composer: Enter sends, Shift+Enter is a new line; typing is shown to the participant.
  var reply = $("reply");
  var sendBtn = $("send");
  var sending = false;
  var pending = null; // the message being sent: {text, note, id} (a retry reuses the id)
  var typingOn = false, typingSentAt = 0, typingIdle = null;

  function newClientId() {
    var r = new Uint8Array(8);
    crypto.getRandomValues(r);
    return "c-" + Date.now().toString(36) + "-" + Array.prototype.map.call(r, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  function sendTyping(on) {
    api("POST", convPath("typing"), { on: on }).catch(function () { /* best effort */ });
  }

  function typingActivity() {
    if (conv.noteMode || !reply.value.trim()) {
      stopTyping();
      return;
    }
    var now = Date.now();
    if (!typingOn || now - typingSentAt > 2500) {
      typingOn = true;
      typingSentAt = now;
      sendTyping(true);
    }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopTyping, 3000);
  }

  function stopTyping() {
    clearTimeout(typingIdle);
    if (typingOn) {
      typingOn = false;
      sendTyping(false);
    }
  }

  function setNoteMode(on) {
    if (on && typingOn) stopTyping();
    conv.noteMode = on;
    var b = $("note-toggle");
    b.setAttribute("aria-pressed", on ? "true" : "false");
    $("composer").classList.toggle("note-mode", on);
    reply.placeholder = on
      ? "Write a private note… (only agents see it)"
      : "Write a reply… (/ for canned responses)";
    $("mode-hint").textContent = on ? "Private note: only agents see this" : "Replying to the participant";
    sendBtn.textContent = on ? "Add note" : "Send";
  }

  function send() {
    var text = reply.value.trim();
    if (!text || sending) return;
    var note = conv.noteMode;
    if (!pending || pending.text !== text || pending.note !== note) {
      pending = { text: text, note: note, id: newClientId() };
    }
    sending = true;
    sendBtn.disabled = true;
    if (!note) stopTyping();
    clearError();
    api("POST", convPath(note ? "note" : "reply"), { id: pending.id, text: text }).then(
      function () {
        pending = null;
        if (reply.value.trim() === text) reply.value = "";
      },
      function (e) {
        // The text stays; sending again reuses the id, so it is applied once.
        showError(e);
      }
    ).then(function () {
      sending = false;
      sendBtn.disabled = false;
      reply.focus();
    });
  }

  // Canned responses: "/code" at the caret lists those whose code starts with it.
  var cannedList = $("canned-list");
  var cannedState = null; // {matches, active, start, end}

  function cannedQuery() {
    var pos = reply.selectionStart;
    if (pos !== reply.selectionEnd) return null;
    var m = /(^|\s)\/([A-Za-z0-9_-]*)$/.exec(reply.value.slice(0, pos));
    return m ? { start: pos - m[2].length - 1, end: pos, code: m[2].toLowerCase() } : null;
  }

  function updateCanned() {
    var q = cannedQuery();
    if (!q || !conv.canned.length) return closeCanned();
    var matches = conv.canned.filter(function (c) {
      return c.code.toLowerCase().indexOf(q.code) === 0;
    }).slice(0, 8);
    if (!matches.length) return closeCanned();
    var active = cannedState ? Math.min(cannedState.active, matches.length - 1) : 0;
    cannedState = { matches: matches, active: active, start: q.start, end: q.end };
    cannedList.textContent = "";
    matches.forEach(function (c, i) {
      var li = el("li", "option");
      li.id = "canned-" + i;
      li.setAttribute("role", "option");
      li.appendChild(el("span", "code", "/" + c.code));
      li.appendChild(el("span", "title", c.title));
      li.appendChild(el("span", "text", c.text));
      li.addEventListener("mousedown", function (e) {
        e.preventDefault(); // keep the focus in the reply box
        insertCanned(i);
      });
      cannedList.appendChild(li);
    });
    highlightCanned();
    cannedList.hidden = false;
    reply.setAttribute("aria-expanded", "true");
  }

  function highlightCanned() {
    var items = cannedList.children;
    for (var i = 0; i < items.length; i++) {
      items[i].setAttribute("aria-selected", i === cannedState.active ? "true" : "false");
    }
    reply.setAttribute("aria-activedescendant", "canned-" + cannedState.active);
  }

  function closeCanned() {
    cannedState = null;
    if (!cannedList) return;
    cannedList.hidden = true;
    cannedList.textContent = "";
    reply.setAttribute("aria-expanded", "false");
    reply.removeAttribute("aria-activedescendant");
  }

  function insertCanned(i) {
    var s = cannedState;
    if (!s) return;
    var c = s.matches[i];
    var v = reply.value;
    reply.value = v.slice(0, s.start) + c.text + v.slice(s.end);
    var caret = s.start + c.text.length;
    reply.setSelectionRange(caret, caret);
    closeCanned();
    reply.focus();
    typingActivity();
  }

  // Menus (snooze, transfer, return to flow): one open at a time; Esc closes.
  function closeMenus(except) {
    var openers = document.querySelectorAll(".menu > button[aria-expanded]");
    for (var i = 0; i < openers.length; i++) {
      var b = openers[i];
      if (b === except) continue;
      var popup = $(b.getAttribute("aria-controls"));
      if (!popup.hidden && popup.contains(document.activeElement)) b.focus();
      b.setAttribute("aria-expanded", "false");
      popup.hidden = true;
    }
  }

  function toggleMenu(btn) {
    var popup = $(btn.getAttribute("aria-controls"));
    var opening = popup.hidden;
    closeMenus(btn);
    popup.hidden = !opening;
    btn.setAttribute("aria-expanded", opening ? "true" : "false");
    if (opening) {
      var first = popup.querySelector("button, input, select");
      if (first) first.focus();
    }
  }

  function done(result) {
    if (result !== null) closeMenus();
    return result;
  }

  function renderTransferAgents() {
    var sel = $("transfer-agent");
    if (!sel) return;
    var keep = sel.value;
    sel.textContent = "";
    var others = desk.agents.filter(function (a) { return a.id !== me.id; });
    if (!others.length) {
      var none = el("option", null, "(nobody else is online)");
      none.value = "";
      sel.appendChild(none);
    }
    others.forEach(function (a) {
      var o = el("option", null, a.name + " — " + a.load + "/" + a.capacity + (a.available ? "" : ", away"));
      o.value = a.id;
      sel.appendChild(o);
    });
    if (keep) sel.value = keep;
    $("transfer-to-agent").disabled = !others.length;
  }

  function setupConversation() {
    reply.addEventListener("keydown", function (e) {
      if (cannedState) {
        var n = cannedState.matches.length;
        if (e.key === "ArrowDown" || e.key === "ArrowUp") {
          e.preventDefault();
          cannedState.active = (cannedState.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
          highlightCanned();
          return;
        }
        if (e.key === "Enter" || e.key === "Tab") {
          e.preventDefault();
          insertCanned(cannedState.active);
          return;
        }
        if (e.key === "Escape") {
          e.preventDefault();
          e.stopPropagation();
          closeCanned();
          return;
        }
      }
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send();
      }
    });
    reply.addEventListener("input", function () {
      updateCanned();
      typingActivity();
    });
    reply.addEventListener("click", updateCanned);
    reply.addEventListener("blur", function () { setTimeout(closeCanned, 100); });
    $("composer").addEventListener("submit", function (e) {
      e.preventDefault();
      send();
    });
    $("note-toggle").addEventListener("click", function () {
      setNoteMode(!conv.noteMode);
      reply.focus();
    });

    $("pick").addEventListener("click", function () { act("POST", convPath("pick")); });
    $("resolve").addEventListener("click", function () {
      act("POST", convPath("resolve"), {});
    });

    var openers = document.querySelectorAll(".menu > button[aria-expanded]");
    for (var i = 0; i < openers.length; i++) {
      openers[i].addEventListener("click", function (e) { toggleMenu(e.currentTarget); });
    }
    document.addEventListener("click", function (e) {
      if (!e.target.closest(".menu")) closeMenus();
    });

    $("snooze-menu").addEventListener("click", function (e) {
      var b = e.target.closest("button[data-snooze]");
      if (!b) return;
      var until;
      if (b.dataset.snooze === "hour") until = serverNow() + 3600000;
      else if (b.dataset.snooze === "tomorrow") {
        var d = new Date();
        d.setDate(d.getDate() + 1);
        d.setHours(9, 0, 0, 0);
        until = d.getTime();
      } else {
        var v = $("snooze-until").value;
        until = v ? new Date(v).getTime() : NaN;
        if (!isFinite(until)) {
          showError({ message: "Choose a date and time to snooze until." });
          $("snooze-until").focus();
          return;
        }
      }
      act("POST", convPath("snooze"), { until: until }).then(done);
    });

    $("transfer-to-agent").addEventListener("click", function () {
      var agent = $("transfer-agent").value;
      if (!agent) {
        showError({ message: "Choose an agent to transfer to." });
        return;
      }
      act("POST", convPath("transfer"), { agent: agent }).then(done);
    });
    $("transfer-to-queue").addEventListener("click", function () {
      var queue = $("transfer-queue").value.trim();
      if (!queue) {
        showError({ message: "Name the queue to transfer to." });
        $("transfer-queue").focus();
        return;
      }
      act("POST", convPath("transfer"), { queue: queue }).then(done);
    });
    $("return-go").addEventListener("click", function () {
      var step = $("return-step").value.trim();
      if (!step) {
        showError({ message: "Name the step the flow continues at." });
        $("return-step").focus();
        return;
      }
      act("POST", convPath("resolve"), { step: step }).then(done);
    });
    function saveTags() {
      var tags = $("tags-input").value.split(/\s+/).filter(Boolean);
      act("POST", convPath("tags"), { tags: tags });
    }
    $("tags-save").addEventListener("click", saveTags);
    $("tags-input").addEventListener("keydown", function (e) {
      if (e.key === "Enter") {
        e.preventDefault();
        saveTags();
      }
    });

    if (logEl.lastElementChild) logEl.scrollTop = logEl.scrollHeight;
    renderConversationState();
    connectLog();
  }

  // ------------------------------------------------------------------ shortcuts

  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      closeMenus();
      return;
    }
    if (!e.altKey || e.ctrlKey || e.metaKey) return;
    var k = e.code;
    if (k === "KeyR" && conv) {
      e.preventDefault();
      reply.focus();
    } else if (k === "KeyN" && conv) {
      e.preventDefault();
      if (!$("note-toggle").disabled) setNoteMode(!conv.noteMode);
      reply.focus();
    } else if (k === "KeyA") {
      e.preventDefault();
      toggleAvailability();
    } else if (k === "KeyQ") {
      e.preventDefault();
      location.href = "/console";
    }
  });

  // ------------------------------------------------------------------ start

  localizeTimes();
  setInterval(tickSince, 30000);
  if (conv) setupConversation();
  connectDesk();
})();
