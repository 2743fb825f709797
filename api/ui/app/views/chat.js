// One conversation: its history, the answer streaming in, and the message box.
import { ApiError, apiPath, describeError, enc, randomKey } from '../api.js';
import { applyEvent, historyEntries, newAnswer, withApproval, withDecision } from '../events.js';
import { html, useEffect, useLayoutEffect, useRef, useState } from '../html.js';
import { followTurn, pendingTurns } from '../turn.js';
import { AttachIcon } from '../icons.js';
import { AnswerActions, EditMessage, UserActions } from './actions.js';
import { Answer, UserMessage } from './messages.js';

export const MAX_IMAGES = 5;
export const MAX_IMAGE_BYTES = 5 * 1024 * 1024; // PARLEY_MAX_IMAGE_BYTES' default; the server has the last word.
const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
const HISTORY_PAGE = 100;
const FINAL = ['finished', 'failed', 'canceled'];
const STEER_TEXT_ONLY = 'Only text can join a running answer: remove the images, or use Stop and send.';

/** A first message typed before its session existed, handed to the session's own view. */
const outbox = new Map();

function readAsDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function formatBytes(bytes) {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
}

/**
 * The message box; `busy`: a turn is on its way and this one cannot be sent yet, `running`: a turn streams.
 * While one runs a message can still be sent, two ways: *Steer* (Enter; it joins the running turn before its
 * next model call) or *Stop and send* (Alt+Enter; the running turn is canceled and this one runs instead).
 */
function Composer({ agentName, busy, running, canStop, onSend, onSteer, onInterrupt, onStop, inputRef, initialText,
  notice }) {
  const [text, setText] = useState(initialText || '');
  const [images, setImages] = useState([]);
  const [problem, setProblem] = useState('');
  const fileRef = useRef(null);

  useEffect(() => { if (initialText) setText(initialText); }, [initialText]);

  async function addFiles(files) {
    const room = MAX_IMAGES - images.length;
    const problems = [];
    const added = [];
    for (const file of files) {
      if (!IMAGE_TYPES.includes(file.type)) problems.push(`${file.name}: not a PNG, JPEG, GIF or WebP image`);
      else if (file.size > MAX_IMAGE_BYTES) {
        problems.push(`${file.name} is ${formatBytes(file.size)}; the limit is ${formatBytes(MAX_IMAGE_BYTES)}`);
      } else if (added.length >= room) problems.push(`at most ${MAX_IMAGES} images per message`);
      else added.push({ name: file.name, size: file.size, uri: await readAsDataUri(file) });
    }
    setImages([...images, ...added]);
    setProblem([...new Set(problems)].join('. '));
  }

  /** Hands the text and images to `action` and empties the box. */
  function take(action) {
    action(text, images.map((image) => image.uri));
    setText('');
    setImages([]);
    setProblem('');
  }

  function submit(event) {
    event.preventDefault();
    if (!text.trim()) return;
    if (running && images.length) setProblem(STEER_TEXT_ONLY);
    else if (running) take(onSteer);
    else if (!busy) take(onSend);
  }

  function interrupt() {
    if (running && text.trim()) take(onInterrupt);
  }

  function onKeyDown(event) {
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (event.altKey) interrupt();
    else submit(event);
  }

  return html`
    <form class="composer" onSubmit=${submit} aria-label="Send a message">
      ${images.length > 0 && html`<ul class="attachments" aria-label="Attached images">
        ${images.map((image, i) => html`<li key=${i}>
          <img src=${image.uri} alt=${image.name} />
          <span class="attachment-size">${formatBytes(image.size)}</span>
          <button type="button" class="icon-button" aria-label=${`Remove ${image.name}`}
            onClick=${() => setImages(images.filter((_, j) => j !== i))}>×</button>
        </li>`)}
      </ul>`}
      ${problem && html`<p class="field-error" role="alert">${problem}</p>`}
      ${notice && html`<p class="field-error" role="alert">${notice}</p>`}
      <div class="composer-row">
        <input type="file" ref=${fileRef} class="visually-hidden" tabindex="-1" aria-hidden="true"
          accept=${IMAGE_TYPES.join(',')} multiple
          onChange=${(e) => { addFiles([...e.currentTarget.files]); e.currentTarget.value = ''; }} />
        <button type="button" class="icon-button" aria-label="Attach images (up to 5)" title="Attach images"
          disabled=${images.length >= MAX_IMAGES} onClick=${() => fileRef.current.click()}>
          <${AttachIcon} />
        </button>
        <label for="message-input" class="visually-hidden">Message</label>
        <textarea id="message-input" ref=${inputRef} rows="1" value=${text} placeholder=${`Message ${agentName}…`}
          aria-describedby="composer-hint"
          onInput=${(e) => setText(e.currentTarget.value)} onKeyDown=${onKeyDown}></textarea>
        ${running
          ? html`<div class="composer-buttons">
              <button type="submit" class="button primary" disabled=${!text.trim() || images.length > 0}
                title=${images.length ? STEER_TEXT_ONLY : 'Your message joins this answer before the agent\u2019s next step (Enter)'}>Steer</button>
              <button type="button" class="button" disabled=${!text.trim()} onClick=${interrupt}
                title="Cancel this answer and send your message instead (Alt+Enter)">Stop and send</button>
              <button type="button" class="button danger" onClick=${onStop} disabled=${!canStop}>Stop</button>
            </div>`
          : html`<button type="submit" class="button primary" disabled=${busy || !text.trim()}>Send</button>`}
      </div>
      <p id="composer-hint" class="hint">${running
        ? 'The agent is answering. Enter (Steer) adds your message to this answer; Alt+Enter (Stop and send) cancels it and sends yours instead.'
        : 'Enter sends, Shift+Enter adds a line.'}</p>
    </form>`;
}

/** The steered messages still waiting, once the turn's `steered` event for `message` said it joined. */
function joined(steers = [], message) {
  const index = steers.findIndex((item) => item.message === message);
  const gone = index < 0 ? 0 : index;
  return steers.filter((_, i) => i !== gone);
}

function LiveProblem({ live, onRetry, onResume, onDismiss }) {
  const { answer, failure } = live;
  // A turn sent from elsewhere: its message is not known here. A regenerate has none: it is asked again.
  const canRetry = Boolean(live.request?.message || live.request?.regenerate);
  let words = null;
  let action = null;
  if (failure) {
    words = describeError(failure);
    action = failure.code === 'stream_lost'
      ? html`<button class="button" onClick=${onResume}>Reconnect</button>`
      : failure.status !== 401 && canRetry && html`<button class="button" onClick=${() => onRetry(!answer.jobId)}>Try again</button>`;
  } else if (answer.phase === 'canceled') {
    words = 'Stopped. This answer was not saved.';
    action = canRetry && html`<button class="button" onClick=${() => onRetry(false)}>Send again</button>`;
  } else if (answer.phase === 'error') {
    const status = answer.error.code === 'model_failed' ? 502 : 0;
    words = status ? describeError(new ApiError(502, 'model_failed', answer.error.message))
      : `The answer failed: ${answer.error.message}`;
    action = canRetry && html`<button class="button" onClick=${() => onRetry(false)}>Try again</button>`;
  }
  if (!words) return null;
  return html`<div class="problem" role="alert">
    <p>${words}</p>
    <div class="actions">${action}<button class="button subtle" onClick=${onDismiss}>Dismiss</button></div>
  </div>`;
}

export function ChatPane({ api, apiKey, agent, sessionId, onSessionStarted, onTurnEnded, onAnnounce }) {
  const [entries, setEntries] = useState(() => (sessionId ? [] : greeting(agent)));
  const [nextBefore, setNextBefore] = useState(null);
  const [history, setHistory] = useState(sessionId ? 'loading' : 'ready');
  const [historyError, setHistoryError] = useState(null);
  const [live, setLive] = useState(null);
  const [returned, setReturned] = useState('');
  const [notice, setNotice] = useState('');
  const [editing, setEditing] = useState(null); // {id, saving, error}: the user message being edited
  const [branching, setBranching] = useState(false);
  const messagesRef = useRef([]); // the stored messages loaded so far, oldest first
  const liveRef = useRef(null);
  const controllerRef = useRef(null);
  const frameRef = useRef(0);
  const logRef = useRef(null);
  const stickRef = useRef(true);
  const inputRef = useRef(null);

  function draw() {
    const current = liveRef.current;
    setLive(current && { ...current });
    // What is drawn, and the event it ends with, for a reload to resume from (Last-Event-ID).
    if (current && !current.answer.done && current.lastEventId) {
      pendingTurns.progress(apiKey, sessionId, current.answer, current.lastEventId);
    }
  }

  function updateLive(next, now = false) {
    liveRef.current = next;
    if (now) {
      cancelAnimationFrame(frameRef.current);
      frameRef.current = 0;
      draw();
    } else if (!frameRef.current) {
      // Many deltas a second, one render per frame.
      frameRef.current = requestAnimationFrame(() => { frameRef.current = 0; draw(); });
    }
  }

  async function loadHistory() {
    const page = await api.get(apiPath(`sessions/${enc(sessionId)}/messages`, { limit: HISTORY_PAGE }));
    messagesRef.current = page.data;
    setEntries(historyEntries(page.data, agent));
    setNextBefore(page.next_before);
    setHistory('ready');
    return page.data;
  }

  async function loadOlder() {
    const page = await api.get(apiPath(`sessions/${enc(sessionId)}/messages`, { limit: HISTORY_PAGE, before: nextBefore }));
    stickRef.current = false;
    messagesRef.current = [...page.data, ...messagesRef.current];
    setEntries(historyEntries(messagesRef.current, agent)); // a turn's steps may start on the older page
    setNextBefore(page.next_before);
  }

  /** Follows a turn (new or running) until it ends; the live answer is drawn as events arrive. */
  async function follow(options) {
    controllerRef.current?.abort();
    const controller = new AbortController();
    controllerRef.current = controller;
    try {
      await followTurn(api, {
        ...options,
        signal: controller.signal,
        // A turn no longer followed (Stop and send started another) draws nothing more, even from events
        // its stream had already buffered.
        onJob: (jobId) => {
          if (controller.signal.aborted) return;
          const current = liveRef.current;
          pendingTurns.set(apiKey, sessionId, { jobId, message: current.request.message, images: current.request.images,
            regenerate: Boolean(current.request.regenerate) });
          updateLive({ ...current, answer: { ...current.answer, jobId } }, true);
        },
        onEvent: (event, id) => {
          if (controller.signal.aborted) return;
          const current = liveRef.current;
          const steers = event.type === 'steered' ? joined(current.steers, event.message) : current.steers;
          updateLive({ ...current, steers, lastEventId: id || current.lastEventId, answer: applyEvent(current.answer, event) });
          if (event.type === 'steered') onAnnounce('Your message joined the answer.');
          if (event.type === 'approval_required') onAnnounce(`${event.tool_name} waits for your decision: Approve or Deny.`);
        },
        onConnection: (state, attempt) => {
          if (controller.signal.aborted) return;
          const current = liveRef.current;
          updateLive({ ...current, connection: state, answer: { ...current.answer,
            statusText: state === 'reconnecting' ? `Connection lost; reconnecting (attempt ${attempt})…` : 'Reconnected…' } }, true);
          if (state === 'reconnecting' && attempt === 1) onAnnounce('Connection lost; reconnecting.');
        },
      });
    } catch (error) {
      if (error.name === 'AbortError' || controller.signal.aborted) return;
      if (!liveRef.current?.answer.jobId) pendingTurns.clear(apiKey, sessionId);
      updateLive({ ...liveRef.current, failure: error }, true);
      onAnnounce(describeError(error));
      return;
    }
    if (controller.signal.aborted) return; // its `done` was read as another turn took over
    pendingTurns.clear(apiKey, sessionId);
    onTurnEnded();
    const answer = liveRef.current.answer;
    const leftover = liveRef.current.steers || []; // steered too late for this turn: they make the next one
    if (answer.phase === 'done') {
      try {
        await loadHistory(); // The stored turn replaces the live copy: one answer, with its message ids.
        updateLive(null, true);
      } catch {
        // The answer is stored; only reading it back failed. Show it as it streamed, as history.
        const { user, answer: shown } = liveRef.current;
        setEntries((current) => [...current, ...(user ? [{ kind: 'user', id: `u-${shown.jobId}`, ...user }] : []),
          { kind: 'answer', id: `a-${shown.jobId}`, answer: shown }]);
        updateLive(null, true);
      }
      onAnnounce('Answer complete.');
    } else {
      updateLive({ ...liveRef.current, steers: [] }, true);
      onAnnounce(answer.phase === 'canceled' ? 'Stopped.' : `The answer failed: ${answer.error?.message}`);
    }
    await followNext(leftover[0]?.message ?? null);
  }

  /**
   * The session's next turn, if one is under way: a steered message that came too late for the turn became
   * one (`message`), or another window (or a reload that lost its steers) queued one. With a late steer and
   * no turn left, that turn already ended: the history is read again to show it.
   */
  async function followNext(message) {
    if (liveRef.current && !liveRef.current.answer.done && !liveRef.current.failure) return; // followed already
    const job = await activeJob();
    if (job) await attach({ jobId: job.job_id, message }, job);
    else if (message) await loadHistory().catch(() => {});
  }

  async function send(message, images, key = randomKey(), onBusy = null) {
    stickRef.current = true;
    setNotice('');
    if (!sessionId) {
      try {
        const session = await api.post(apiPath('sessions'),
          { agent: agent.id, metadata: { title: message.trim().slice(0, 80) } });
        outbox.set(session.session_id, { message, images, key });
        onSessionStarted(session);
      } catch (error) {
        setReturned(message);
        onAnnounce(describeError(error));
        setHistoryError(error);
      }
      return;
    }
    updateLive({ user: { content: message, images }, answer: newAnswer(), request: { message, images, key },
      failure: null, connection: 'live', lastEventId: null, steers: [] }, true);
    const body = { message, session_id: sessionId, images };
    if (onBusy) body.on_busy = onBusy; // 'interrupt': the running turn ends canceled and this one runs next
    await follow({ start: { body, key } });
  }

  /** Answers the last message again; the new answer replaces the old one (hidden meanwhile). */
  async function regenerate(key = randomKey()) {
    stickRef.current = true;
    setNotice('');
    updateLive({ user: null, regenerate: true, answer: newAnswer(), request: { regenerate: true, key },
      failure: null, connection: 'live', lastEventId: null, steers: [] }, true);
    await follow({ start: { body: { regenerate: true, session_id: sessionId }, key } });
  }

  /**
   * Sends a message into the running turn (`on_busy: "steer"`). It shows as waiting under the answer until
   * the turn's `steered` event says where it joined; if the turn ends first, it makes the next turn.
   */
  async function steer(message) {
    const key = randomKey();
    const change = (edit) => {
      const current = liveRef.current;
      if (current) updateLive({ ...current, steers: edit(current.steers || []) }, true);
    };
    setNotice('');
    stickRef.current = true;
    change((list) => [...list, { key, message, state: 'sending' }]);
    const body = { message, session_id: sessionId, on_busy: 'steer' }; // text only: the API refuses images here
    try {
      await api.post(apiPath('chat/jobs'), body, { headers: { 'Idempotency-Key': key } });
      change((list) => list.map((item) => (item.key === key ? { ...item, state: 'sent' } : item)));
      onAnnounce('Sent: your message joins the answer before the agent\u2019s next step.');
    } catch (error) {
      change((list) => list.filter((item) => item.key !== key));
      setReturned(message);
      setNotice(`Your message was not sent. ${describeError(error)}`);
      onAnnounce(describeError(error));
      return;
    }
    const current = liveRef.current;
    if (!current || current.answer.done) await followNext(message); // the turn ended meanwhile: it is the next one
  }

  /** Cancels the running turn and sends this message instead (`on_busy: "interrupt"`). */
  function interrupt(message, images) {
    send(message, images, randomKey(), 'interrupt');
  }

  /** A new conversation holding this one's messages up to `at` (a message id); the page switches to it. */
  async function fork(at) {
    setBranching(true);
    setNotice('');
    try {
      const session = await api.post(apiPath(`sessions/${enc(sessionId)}/fork`), { at });
      onAnnounce('Forked: this is the new conversation.');
      onSessionStarted(session);
    } catch (error) {
      setBranching(false);
      setNotice(`Could not fork the conversation. ${describeError(error)}`);
      onAnnounce(describeError(error));
    }
  }

  /** An edited user message: a fork before it (a new session when it is the first), then the text sent there. */
  async function sendEdited(entry, text) {
    setEditing({ id: entry.id, saving: true, error: '' });
    try {
      const session = entry.before
        ? await api.post(apiPath(`sessions/${enc(sessionId)}/fork`), { at: entry.before })
        : await api.post(apiPath('sessions'), { agent: agent.id, metadata: { title: text.trim().slice(0, 80) } });
      outbox.set(session.session_id, { message: text, images: entry.images || [], key: randomKey() });
      onAnnounce('Your edited message goes to a new conversation.');
      onSessionStarted(session);
    } catch (error) {
      setEditing({ id: entry.id, saving: false, error: describeError(error) });
    }
  }

  /** Rates a stored answer ('up', 'down', or null to clear); drawn at once, put back if the API refuses. */
  async function rate(entry, rating) {
    const show = (value) => setEntries((list) => list.map((e) => (e.id === entry.id ? { ...e, feedback: value } : e)));
    const before = entry.feedback ?? null;
    show(rating);
    try {
      await api.put(apiPath(`sessions/${enc(sessionId)}/messages/${enc(entry.id)}/feedback`), { rating });
      onAnnounce(rating === 'up' ? 'Rated good.' : rating === 'down' ? 'Rated bad.' : 'Rating cleared.');
    } catch (error) {
      show(before);
      setNotice(`The rating was not saved. ${describeError(error)}`);
      onAnnounce(describeError(error));
    }
  }

  /** The job's calls that wait for a decision, drawn at once (the stream then confirms or updates them). */
  function withPending(answer, job) {
    const steps = (job?.pending || []).reduce(withApproval, answer.steps.map((step) => ({ ...step, decision: undefined })));
    const waiting = job?.status === 'waiting';
    return { ...answer, steps, phase: waiting ? 'waiting' : answer.phase,
      statusText: waiting ? 'Waiting for your decision on a tool call…' : 'Reconnecting to the answer…' };
  }

  async function attach(turn, job) {
    // A turn sent from this page while the session was read (at load, or after a turn) is followed already:
    // following it again would drop that stream, and with it what the page knows of the turn.
    if (liveRef.current && !liveRef.current.answer.done && !liveRef.current.failure) return;
    // The answer as it was drawn before the reload, then the events after its last one; with
    // nothing kept (storage full or off, or a turn sent from another browser), the job's whole
    // stream from its first event. A turn from elsewhere has no message here: only its answer is drawn.
    const kept = turn.progress;
    const answer = kept ? kept.answer : { ...newAnswer(), jobId: turn.jobId };
    const request = turn.message ? { message: turn.message, images: turn.images || [], key: randomKey() }
      : turn.regenerate ? { regenerate: true, key: randomKey() } : null;
    updateLive({ user: turn.message ? { content: turn.message, images: turn.images || [], imageCount: turn.imageCount || 0 } : null,
      answer: withPending(answer, job), lastEventId: kept?.lastEventId ?? null, request, regenerate: Boolean(turn.regenerate),
      failure: null, connection: 'live', steers: [] }, true);
    await follow({ jobId: turn.jobId, after: kept?.lastEventId ?? null });
  }

  /** The session's first unfinished turn (`active_jobs`): how a turn started elsewhere, or one this
   * browser forgot, is found, for example one that waits for an approval. */
  async function activeJob() {
    let session;
    try {
      session = await api.get(`/api/v1/sessions/${enc(sessionId)}`);
    } catch {
      return null;
    }
    for (const jobId of session.active_jobs || []) {
      try {
        const job = await api.get(apiPath(`jobs/${enc(jobId)}`));
        if (!FINAL.includes(job.status)) return job;
      } catch {
        // Gone meanwhile: the next one.
      }
    }
    return null;
  }

  /** The turn this browser kept (`pendingTurns`) if it still runs: `{turn, job}`, else null (and forgotten). */
  async function keptTurn(messages) {
    const turn = pendingTurns.get(apiKey, sessionId);
    if (!turn) return null;
    if (!turn.jobId || messages.some((m) => m.job_id === turn.jobId)) {
      pendingTurns.clear(apiKey, sessionId);
      return null;
    }
    let job;
    try {
      job = await api.get(apiPath(`jobs/${enc(turn.jobId)}`));
    } catch (error) {
      if (error.status === 404) pendingTurns.clear(apiKey, sessionId);
      return null;
    }
    if (FINAL.includes(job.status)) {
      pendingTurns.clear(apiKey, sessionId);
      if (job.status === 'finished') await loadHistory();
      return null;
    }
    return { turn, job };
  }

  async function reattachIfRunning(messages) {
    const kept = await keptTurn(messages);
    if (kept) return attach(kept.turn, kept.job);
    const job = await activeJob();
    if (job) await attach({ jobId: job.job_id, message: null }, job);
  }

  /** Posts a person's decision on a waiting call; the stream's `resumed` / `tool_result` then show what came of it. */
  async function decide(callId, approve, reason) {
    const jobId = liveRef.current?.answer.jobId;
    if (!jobId) return;
    const mark = (decision) => {
      const current = liveRef.current;
      if (current) updateLive({ ...current, answer: withDecision(current.answer, callId, decision) }, true);
    };
    const name = liveRef.current.answer.steps.find((step) => step.callId === callId)?.name || 'the tool call';
    mark({ state: 'sending', approve });
    const body = reason ? { call_id: callId, approve, reason } : { call_id: callId, approve };
    try {
      await api.post(apiPath(`jobs/${enc(jobId)}/approvals`), body);
      mark({ state: 'sent', approve });
      onAnnounce(`${approve ? 'Approved' : 'Denied'} ${name}.`);
    } catch (error) {
      const note = error.status === 409 ? 'This call was decided already (in another window, or it timed out), or the turn does not wait any more.'
        : error.status === 404 ? 'This call no longer waits for a decision.' : describeError(error);
      mark({ state: 'error', approve, note });
      onAnnounce(note);
    }
  }

  useEffect(() => {
    let stopped = false;
    (async () => {
      if (!sessionId) return;
      let messages;
      try {
        messages = await loadHistory();
      } catch (error) {
        if (!stopped) { setHistory('error'); setHistoryError(error); }
        return;
      }
      if (stopped) return;
      const first = outbox.get(sessionId);
      if (first) {
        outbox.delete(sessionId);
        await send(first.message, first.images, first.key);
      } else {
        await reattachIfRunning(messages);
      }
    })();
    inputRef.current?.focus();
    return () => {
      stopped = true;
      controllerRef.current?.abort();
      cancelAnimationFrame(frameRef.current);
    };
  }, []);

  useLayoutEffect(() => {
    const log = logRef.current;
    if (log && stickRef.current) log.scrollTop = log.scrollHeight;
  });

  async function stop() {
    const jobId = liveRef.current?.answer.jobId;
    if (!jobId) return;
    try {
      await api.post(apiPath(`jobs/${enc(jobId)}/cancel`), {});
      onAnnounce('Stopping…');
    } catch (error) {
      onAnnounce(describeError(error));
    }
  }

  function retry(sameKey) {
    const { request } = liveRef.current;
    const key = sameKey ? request?.key : randomKey();
    if (request?.regenerate) regenerate(key);
    else if (request) send(request.message, request.images, key);
  }

  function resume() {
    const current = liveRef.current;
    updateLive({ ...current, failure: null }, true);
    follow({ jobId: current.answer.jobId, after: current.lastEventId });
  }

  function dismiss() {
    const text = liveRef.current?.request?.message || '';
    updateLive(null, true);
    setReturned(text);
    inputRef.current?.focus();
  }

  // A finished answer stays live until the stored history replaces it (a moment): no new turn before,
  // so the history that arrives never races a newer turn's live copy.
  const running = Boolean(live && !live.answer.done && !live.failure);
  const busy = running || Boolean(live && !live.failure && live.answer.phase === 'done');
  const agentName = agent.name;
  const last = entries[entries.length - 1];
  // A regenerated answer replaces the last one: hidden while the new one comes, back if that one fails.
  const replacing = Boolean(live?.regenerate && !live.failure && !['canceled', 'error'].includes(live.answer.phase));
  const canRegenerate = Boolean(sessionId && !live && last?.kind === 'answer' && last.stored
    && entries.some((entry) => entry.kind === 'user'));
  const shown = replacing && last?.kind === 'answer' ? entries.slice(0, -1) : entries;

  function entryView(entry) {
    const stored = Boolean(sessionId && entry.stored);
    if (entry.kind === 'user') {
      if (editing?.id === entry.id) {
        return html`<${EditMessage} key=${entry.id} content=${entry.content} saving=${editing.saving} error=${editing.error}
          onSubmit=${(text) => sendEdited(entry, text)} onCancel=${() => setEditing(null)} />`;
      }
      // The message before the first one loaded is on an older page: load it before editing.
      const canEdit = Boolean(entry.before || !nextBefore);
      const actions = stored && html`<${UserActions} disabled=${branching}
        onEdit=${canEdit ? () => setEditing({ id: entry.id, saving: false, error: '' }) : null}
        onFork=${() => fork(entry.id)} />`;
      return html`<${UserMessage} key=${entry.id} content=${entry.content} images=${entry.images} actions=${actions} />`;
    }
    const actions = stored && html`<${AnswerActions} rating=${entry.feedback ?? null} disabled=${branching}
      onRate=${(rating) => rate(entry, rating)} onFork=${() => fork(entry.id)}
      onRegenerate=${canRegenerate && entry === last ? () => regenerate() : null} />`;
    return html`<${Answer} key=${entry.id} answer=${entry.answer} agentName=${agentName} actions=${actions} />`;
  }

  return html`
    <section class="chat" aria-label=${`Conversation with ${agentName}`}>
      <header class="chat-header">
        <h2>${agentName}</h2>
        ${agent.description && html`<p class="muted">${agent.description}</p>`}
      </header>
      <div class="log" role="log" aria-label="Messages" ref=${logRef} tabindex="0"
        onScroll=${(e) => { const el = e.currentTarget; stickRef.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80; }}>
        ${nextBefore && html`<button class="button subtle older" onClick=${loadOlder}>Show earlier messages</button>`}
        ${history === 'loading' && html`<p class="muted center">Loading the conversation…</p>`}
        ${history === 'error' && html`<div class="problem" role="alert">
          <p>${historyError?.status === 404 ? 'This conversation does not exist (it may have been deleted).' : describeError(historyError)}</p>
          ${historyError?.status !== 404 && html`<button class="button" onClick=${() => location.reload()}>Try again</button>`}
        </div>`}
        ${shown.map(entryView)}
        ${live?.user && html`<${UserMessage} content=${live.user.content} images=${live.user.images} imageCount=${live.user.imageCount || 0} />`}
        ${live && (live.answer.text || live.answer.steps.length || live.answer.thinking || !live.answer.done)
          && html`<${Answer} answer=${live.answer} live=${true} agentName=${agentName} onDecide=${decide} />`}
        ${live?.steers?.map((item) => html`<article class="msg msg-user msg-steer" key=${item.key} aria-label="You said (joins the answer)">
          <p class="msg-text">${item.message}</p>
          <p class="hint">${item.state === 'sending' ? 'Sending…' : 'Joins the answer before the agent\u2019s next step.'}</p>
        </article>`)}
        ${live && html`<${LiveProblem} live=${live} onRetry=${retry} onResume=${resume} onDismiss=${dismiss} />`}
        ${!sessionId && historyError && html`<div class="problem" role="alert"><p>${describeError(historyError)}</p></div>`}
      </div>
      <${Composer} agentName=${agentName} busy=${busy} running=${running} canStop=${Boolean(live?.answer.jobId)} onSend=${send}
        onSteer=${steer} onInterrupt=${interrupt} onStop=${stop} inputRef=${inputRef} initialText=${returned}
        notice=${notice} />
    </section>`;
}

function greeting(agent) {
  if (!agent.first_message) return [];
  return [{ kind: 'answer', id: 'greeting', answer: { ...newAnswer(), text: agent.first_message, phase: 'done', done: true } }];
}
