// One conversation: its history, the answer streaming in, and the message box.
import { ApiError, apiPath, describeError, enc, randomKey } from '../api.js';
import { applyEvent, historyEntries, newAnswer, withApproval, withDecision } from '../events.js';
import { html, useEffect, useLayoutEffect, useRef, useState } from '../html.js';
import { followTurn, pendingTurns } from '../turn.js';
import { AttachIcon } from '../icons.js';
import { Answer, UserMessage } from './messages.js';

export const MAX_IMAGES = 5;
export const MAX_IMAGE_BYTES = 5 * 1024 * 1024; // PARLEY_MAX_IMAGE_BYTES' default; the server has the last word.
const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
const HISTORY_PAGE = 100;
const FINAL = ['finished', 'failed', 'canceled'];

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

/** The message box; `busy`: a turn is on its way (no second one), `running`: it can still be stopped. */
function Composer({ agentName, busy, running, canStop, onSend, onStop, inputRef, initialText }) {
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

  function submit(event) {
    event.preventDefault();
    if (busy || !text.trim()) return;
    onSend(text, images.map((image) => image.uri));
    setText('');
    setImages([]);
    setProblem('');
  }

  function onKeyDown(event) {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) submit(event);
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
          ? html`<button type="button" class="button danger" onClick=${onStop} disabled=${!canStop}>Stop</button>`
          : html`<button type="submit" class="button primary" disabled=${busy || !text.trim()}>Send</button>`}
      </div>
      <p id="composer-hint" class="hint">Enter sends, Shift+Enter adds a line.</p>
    </form>`;
}

function LiveProblem({ live, onRetry, onResume, onDismiss }) {
  const { answer, failure } = live;
  const canRetry = Boolean(live.request?.message); // a turn sent from elsewhere: its message is not known here
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
    setEntries(historyEntries(page.data, agent));
    setNextBefore(page.next_before);
    setHistory('ready');
    return page.data;
  }

  async function loadOlder() {
    const page = await api.get(apiPath(`sessions/${enc(sessionId)}/messages`, { limit: HISTORY_PAGE, before: nextBefore }));
    stickRef.current = false;
    setEntries((current) => [...historyEntries(page.data, agent), ...current]);
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
        onJob: (jobId) => {
          const current = liveRef.current;
          pendingTurns.set(apiKey, sessionId, { jobId, message: current.request.message, images: current.request.images });
          updateLive({ ...current, answer: { ...current.answer, jobId } }, true);
        },
        onEvent: (event, id) => {
          const current = liveRef.current;
          updateLive({ ...current, lastEventId: id || current.lastEventId, answer: applyEvent(current.answer, event) });
          if (event.type === 'approval_required') onAnnounce(`${event.tool_name} waits for your decision: Approve or Deny.`);
        },
        onConnection: (state, attempt) => {
          const current = liveRef.current;
          updateLive({ ...current, connection: state, answer: { ...current.answer,
            statusText: state === 'reconnecting' ? `Connection lost; reconnecting (attempt ${attempt})…` : 'Reconnected…' } }, true);
          if (state === 'reconnecting' && attempt === 1) onAnnounce('Connection lost; reconnecting.');
        },
      });
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (!liveRef.current?.answer.jobId) pendingTurns.clear(apiKey, sessionId);
      updateLive({ ...liveRef.current, failure: error }, true);
      onAnnounce(describeError(error));
      return;
    }
    pendingTurns.clear(apiKey, sessionId);
    onTurnEnded();
    const answer = liveRef.current.answer;
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
      updateLive({ ...liveRef.current }, true);
      onAnnounce(answer.phase === 'canceled' ? 'Stopped.' : `The answer failed: ${answer.error?.message}`);
    }
  }

  async function send(message, images, key = randomKey()) {
    stickRef.current = true;
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
      failure: null, connection: 'live', lastEventId: null }, true);
    await follow({ start: { body: { message, session_id: sessionId, images }, key } });
  }

  /** The job's calls that wait for a decision, drawn at once (the stream then confirms or updates them). */
  function withPending(answer, job) {
    const steps = (job?.pending || []).reduce(withApproval, answer.steps.map((step) => ({ ...step, decision: undefined })));
    const waiting = job?.status === 'waiting';
    return { ...answer, steps, phase: waiting ? 'waiting' : answer.phase,
      statusText: waiting ? 'Waiting for your decision on a tool call…' : 'Reconnecting to the answer…' };
  }

  async function attach(turn, job) {
    // The answer as it was drawn before the reload, then the events after its last one; with
    // nothing kept (storage full or off, or a turn sent from another browser), the job's whole
    // stream from its first event. A turn from elsewhere has no message here: only its answer is drawn.
    const kept = turn.progress;
    const answer = kept ? kept.answer : { ...newAnswer(), jobId: turn.jobId };
    updateLive({ user: turn.message ? { content: turn.message, images: turn.images || [], imageCount: turn.imageCount || 0 } : null,
      answer: withPending(answer, job), lastEventId: kept?.lastEventId ?? null,
      request: turn.message ? { message: turn.message, images: turn.images || [], key: randomKey() } : null,
      failure: null, connection: 'live' }, true);
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
    if (request) send(request.message, request.images, sameKey ? request.key : randomKey());
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
        ${entries.map((entry) => (entry.kind === 'user'
          ? html`<${UserMessage} key=${entry.id} content=${entry.content} images=${entry.images} />`
          : html`<${Answer} key=${entry.id} answer=${entry.answer} agentName=${agentName} />`))}
        ${live?.user && html`<${UserMessage} content=${live.user.content} images=${live.user.images} imageCount=${live.user.imageCount || 0} />`}
        ${live && (live.answer.text || live.answer.steps.length || live.answer.thinking || !live.answer.done)
          && html`<${Answer} answer=${live.answer} live=${true} agentName=${agentName} onDecide=${decide} />`}
        ${live && html`<${LiveProblem} live=${live} onRetry=${retry} onResume=${resume} onDismiss=${dismiss} />`}
        ${!sessionId && historyError && html`<div class="problem" role="alert"><p>${describeError(historyError)}</p></div>`}
      </div>
      <${Composer} agentName=${agentName} busy=${busy} running=${running} canStop=${Boolean(live?.answer.jobId)} onSend=${send}
        onStop=${stop} inputRef=${inputRef} initialText=${returned} />
    </section>`;
}

function greeting(agent) {
  if (!agent.first_message) return [];
  return [{ kind: 'answer', id: 'greeting', answer: { ...newAnswer(), text: agent.first_message, phase: 'done', done: true } }];
}
