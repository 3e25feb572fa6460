// The try-it page: join a channel with a name and the microphone, hear the others, see who is
// here and who speaks, mute, leave; and a connection panel from getStats(). Plain DOM, no
// framework; the voice API client is ./choir-client.js.
import { ApiError, ChoirClient } from './choir-client.js';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('join-form'),
  channel: $('channel'),
  name: $('name'),
  tokenField: $('token-field'),
  token: $('token'),
  processing: $('processing'),
  join: $('join'),
  joinListen: $('join-listen'),
  joinSection: $('join-section'),
  call: $('call'),
  callChannel: $('call-channel'),
  callName: $('call-name'),
  mute: $('mute'),
  leave: $('leave'),
  micWrap: $('mic-wrap'),
  micLevel: $('mic-level'),
  participants: $('participants'),
  connSend: $('conn-send'),
  connRecv: $('conn-recv'),
  connNodeRow: $('conn-node-row'),
  connNode: $('conn-node'),
  remoteStats: $('remote-stats').tBodies[0],
  audioOut: $('audio-out'),
  status: $('status'),
  error: $('error'),
};

let config = { auth: false };
let client = null;
let statsTimer = null;
let connectTimer = null;
let connectionProblemShown = false;
/** How long media may take to connect before the page says why it might not. */
const CONNECT_WARNING_MS = 10000;
let meter = null;
/** Set once a speaking event arrived: until then the list shows presence only. */
let speakingSeen = false;

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

/** The claims of a JWT (no verification: only to prefill the form). */
function claimsOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

async function init() {
  const params = new URLSearchParams(location.search);
  try {
    const res = await fetch('/demo/config.json');
    if (res.ok) config = await res.json();
  } catch {
    // The defaults (no auth) then; an API call will say more.
  }
  const token = params.get('token') ?? '';
  const claims = token ? claimsOf(token) : {};
  ui.channel.value = params.get('channel') ?? claims.channelId ?? ui.channel.value;
  ui.name.value = params.get('name') ?? claims.userId ?? '';
  if (config.auth || token) {
    ui.tokenField.hidden = false;
    ui.token.value = token;
    ui.token.required = !!config.auth;
  }
  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    join(true);
  });
  ui.joinListen.addEventListener('click', () => join(false));
  ui.mute.addEventListener('click', toggleMute);
  ui.leave.addEventListener('click', () => leave('You left the channel.'));
  window.addEventListener('pagehide', () => {
    // The tab is going away: tell choir now rather than after its consent timeout.
    if (!client?.joined) return;
    const headers = { 'Content-Type': 'application/json' };
    if (client.api.token) headers.Authorization = `Bearer ${client.api.token}`;
    fetch('/api/voice/leave', {
      method: 'POST',
      keepalive: true,
      headers,
      body: JSON.stringify({ channelId: client.channelId, userId: client.userId }),
    }).catch(() => {});
  });
  setStatus(navigator.mediaDevices ? 'Type a channel and your name, then join.' : '');
  if (!navigator.mediaDevices) showError(insecureMessage());
  ui.name.focus();
}

function insecureMessage() {
  return (
    'This browser offers no microphone to this page, because it was opened over plain http from ' +
    'another address than localhost (browsers allow the microphone only in a secure context). Open it ' +
    `as http://localhost${location.port ? `:${location.port}` : ''}/ (for example through ` +
    '"ssh -L 3001:localhost:3001 <server>") or through an HTTPS reverse proxy. ' +
    'You can still join listening only.'
  );
}

function micMessage(e) {
  switch (e.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Microphone access was refused. Allow the microphone for this site (the icon next to the address) and join again, or join listening only.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No microphone was found. Plug one in and join again, or join listening only.';
    case 'NotReadableError':
    case 'AbortError':
      return 'The microphone could not be opened (is another application using it?). Join again, or join listening only.';
    default:
      return `The microphone could not be opened: ${e.message}`;
  }
}

function busy(on) {
  ui.join.disabled = on;
  ui.joinListen.disabled = on;
}

async function join(withMic) {
  showError('');
  const channelId = ui.channel.value.trim();
  const userId = ui.name.value.trim();
  const token = ui.token.value.trim();
  if (!channelId || !userId) {
    showError(!channelId ? 'Type a channel name.' : 'Type your name.');
    (!channelId ? ui.channel : ui.name).focus();
    return;
  }
  if (config.auth && !token) {
    showError('This choir requires an access token: paste one into "Access token".');
    ui.token.focus();
    return;
  }
  busy(true);
  let track = null;
  try {
    if (withMic) {
      if (!navigator.mediaDevices?.getUserMedia) throw Object.assign(new Error(insecureMessage()), { name: 'Insecure' });
      setStatus('Asking for the microphone…');
      // Voice processing suits speech; off, a tone or music passes as it is.
      const on = ui.processing.checked;
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: on, noiseSuppression: on, autoGainControl: on },
      });
      track = stream.getAudioTracks()[0];
    }
  } catch (e) {
    busy(false);
    setStatus('');
    showError(e.name === 'Insecure' ? e.message : micMessage(e));
    ui.joinListen.focus();
    return;
  }
  setStatus(`Joining ${channelId}…`);
  client = new ChoirClient({ token });
  wire(client);
  try {
    await client.join(channelId, userId, track);
  } catch (e) {
    track?.stop();
    client = null;
    busy(false);
    setStatus('');
    showError(joinMessage(e));
    return;
  }
  busy(false);
  speakingSeen = false;
  ui.callChannel.textContent = channelId;
  ui.callName.textContent = userId;
  ui.joinSection.hidden = true;
  ui.call.hidden = false;
  ui.mute.hidden = !track;
  ui.micWrap.hidden = !track;
  setMuteButton(false);
  if (track) meter = startMeter(track);
  renderParticipants();
  statsTimer = setInterval(renderStats, 1000);
  renderStats();
  connectTimer = setTimeout(() => {
    const problem = client?.connectionProblem();
    if (problem) {
      showError(problem);
      connectionProblemShown = true;
    }
  }, CONNECT_WARNING_MS);
  const n = client.remotes.size;
  setStatus(`Joined ${channelId} as ${userId}${track ? '' : ', listening only'}. ${n === 0 ? 'Nobody else is here yet.' : `${n} other${n === 1 ? '' : 's'} here.`}`);
  ui.mute.hidden ? ui.leave.focus() : ui.mute.focus();
}

function joinMessage(e) {
  if (e instanceof ApiError) {
    if (e.status === 401) return `choir refused the token: ${e.message}`;
    if (e.status === 403) return `The token is for another channel or user: ${e.message}`;
    if (e.status === 429) return `Too many requests or connections: ${e.message}`;
    if (e.status === 503) return `choir is full or stopping: ${e.message}`;
    return `choir said: ${e.message}`;
  }
  return `Could not join: ${e.message}`;
}

function wire(c) {
  const known = new Set();
  c.addEventListener('participant', (e) => {
    if (e.detail.speakingKnown) speakingSeen = true;
    if (!e.detail.self && !known.has(e.detail.userId)) {
      if (c.joined && ui.joinSection.hidden) setStatus(`${e.detail.userId} joined.`);
      known.add(e.detail.userId);
    }
    renderParticipants();
  });
  c.addEventListener('participantgone', (e) => known.delete(e.detail.userId));
  c.addEventListener('participantgone', (e) => {
    removeAudio(e.detail.userId);
    setStatus(`${e.detail.userId} left.`);
    renderParticipants();
  });
  c.addEventListener('track', (e) => {
    playAudio(e.detail.userId, e.detail.track);
    renderParticipants();
  });
  c.addEventListener('trackgone', (e) => removeAudio(e.detail.userId));
  c.addEventListener('problem', (e) => showError(e.detail.message));
  c.addEventListener('connection', () => {
    // A late connection clears the warning it had caused.
    if (connectionProblemShown && !c.connectionProblem()) {
      connectionProblemShown = false;
      showError('');
    }
  });
}

function playAudio(userId, track) {
  removeAudio(userId);
  const audio = document.createElement('audio');
  audio.dataset.user = userId;
  audio.autoplay = true;
  audio.srcObject = new MediaStream([track]);
  ui.audioOut.append(audio);
  audio.play().catch((e) => showError(`The browser would not play ${userId}'s audio (${e.message}): click anywhere on the page.`));
}

function removeAudio(userId) {
  for (const a of ui.audioOut.querySelectorAll('audio')) {
    if (a.dataset.user === userId) {
      a.srcObject = null;
      a.remove();
    }
  }
}

function li(userId, what, { speaking = false, muted = false, self = false } = {}) {
  const item = document.createElement('li');
  item.dataset.user = userId;
  item.dataset.speaking = String(speaking);
  item.dataset.muted = String(muted);
  if (self) item.dataset.self = 'true';
  const dot = document.createElement('span');
  dot.className = 'dot';
  dot.setAttribute('aria-hidden', 'true');
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = userId;
  const detail = document.createElement('span');
  detail.className = 'what';
  detail.textContent = what;
  item.append(dot, name, detail);
  return item;
}

function renderParticipants() {
  if (!client?.joined) return;
  const items = [];
  const selfWhat = !client.producerId ? 'you, listening only' : client.muted ? 'you, muted' : 'you';
  items.push(li(client.userId, selfWhat, { self: true, muted: client.muted, speaking: !client.muted && client.speaking }));
  for (const r of [...client.remotes.values()].sort((a, b) => a.userId.localeCompare(b.userId))) {
    let what;
    if (r.paused) what = 'muted';
    else if (!r.track) what = 'connecting…';
    else if (!speakingSeen) what = 'in the channel';
    else what = r.speaking ? 'speaking' : 'quiet';
    if (client.dominant === r.userId && !r.paused && speakingSeen) what += ', main speaker';
    if (r.node) what += `, via ${r.node}${r.region ? ` (region ${r.region})` : ''}`;
    items.push(li(r.userId, what, { speaking: !r.paused && !!r.speaking, muted: !!r.paused }));
  }
  ui.participants.replaceChildren(...items);
}

async function toggleMute() {
  const muted = !client.muted;
  ui.mute.disabled = true;
  try {
    await client.setMuted(muted);
    setMuteButton(muted);
    setStatus(muted ? 'You are muted.' : 'You are unmuted.');
  } catch (e) {
    showError(`Could not ${muted ? 'mute' : 'unmute'}: ${e.message}`);
  } finally {
    ui.mute.disabled = false;
    renderParticipants();
  }
}

function setMuteButton(muted) {
  ui.mute.setAttribute('aria-pressed', String(muted));
  ui.mute.textContent = muted ? 'Unmute' : 'Mute';
}

async function leave(message) {
  clearInterval(statsTimer);
  clearTimeout(connectTimer);
  meter?.stop();
  meter = null;
  const c = client;
  client = null;
  await c?.leave();
  ui.audioOut.replaceChildren();
  ui.participants.replaceChildren();
  ui.remoteStats.replaceChildren();
  ui.connSend.textContent = ui.connRecv.textContent = 'not connected';
  ui.call.hidden = true;
  ui.joinSection.hidden = false;
  setStatus(message);
  ui.join.focus();
}

const ms = (x) => (x === null || x === undefined ? '–' : `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`);

function describePath(el, s, extra) {
  if (!s || !s.protocol) {
    el.textContent = s ? `${s.state ?? 'connecting'}…` : 'not connected';
    delete el.dataset.protocol;
    return;
  }
  el.dataset.protocol = s.protocol;
  el.dataset.local = s.local ?? '';
  el.dataset.remote = s.remote ?? '';
  el.dataset.rtt = s.rttMs ?? '';
  el.textContent = `${s.protocol.toUpperCase()} ${s.local} → choir ${s.remote}, round trip ${ms(s.rttMs)}, ${s.state}${extra}`;
}

async function renderStats() {
  if (!client?.joined) return;
  let s;
  try {
    s = await client.stats();
  } catch {
    return;
  }
  if (!client?.joined) return;
  const sent = s.send
    ? `; sent ${s.send.packetsSent ?? 0} packets${s.send.reportedLost !== undefined ? `, choir reports ${s.send.reportedLost} lost, jitter ${ms(s.send.reportedJitterMs)}` : ''}`
    : '';
  if (client.producerId) describePath(ui.connSend, s.send, sent);
  else ui.connSend.textContent = 'listening only: nothing sent';
  describePath(ui.connRecv, s.recv, '');
  const served = client.served;
  ui.connNodeRow.hidden = !served;
  if (served) ui.connNode.textContent = `${served.node}${served.region ? `, region ${served.region}` : ''}`;
  if (!s.recv) ui.connRecv.textContent = client.remotes.size ? 'connecting…' : 'nobody to receive from yet';
  const rows = s.remotes
    .sort((a, b) => a.userId.localeCompare(b.userId))
    .map((r) => {
      const tr = document.createElement('tr');
      tr.dataset.user = r.userId;
      tr.dataset.received = r.packetsReceived;
      tr.dataset.lost = r.packetsLost;
      tr.dataset.jitter = r.jitterMs ?? '';
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = r.userId;
      const cells = [String(r.packetsReceived), String(r.packetsLost), ms(r.jitterMs)].map((text) => {
        const td = document.createElement('td');
        td.textContent = text;
        return td;
      });
      tr.append(th, ...cells);
      return tr;
    });
  ui.remoteStats.replaceChildren(...rows);
}

/** The microphone's level on the meter (WebAudio), about 20 times a second. */
function startMeter(track) {
  let ctx;
  try {
    ctx = new AudioContext();
  } catch {
    return null;
  }
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = new AnalyserNode(ctx, { fftSize: 1024 });
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    ui.micLevel.value = client?.muted ? 0 : Math.min(1, Math.sqrt(sum / samples.length) * 4);
  }, 50);
  return {
    stop() {
      clearInterval(timer);
      ctx.close().catch(() => {});
    },
  };
}

init();
