// Following one turn's event stream to its end, across dropped connections, and remembering
// running turns so a reload can find them again.
import { ApiError, enc } from './api.js';
import { readEvents } from './sse.js';

/** Waits between reconnection attempts; after the last one the turn is reported as lost. */
export const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 3000, 5000, 5000, 5000];

function aborted() {
  return new DOMException('The turn stopped being followed', 'AbortError');
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(aborted());
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); reject(aborted()); }, { once: true });
  });
}

function openEvents(api, jobId, after, signal) {
  const headers = after ? { 'Last-Event-ID': after } : {};
  return api.fetch('GET', `/api/v1/jobs/${enc(jobId)}/events`, { headers, signal });
}

/**
 * Follows a turn until its `done` event: starts it (`start: {body, key}` -> POST /chat/stream) or
 * attaches to a known job (`jobId`, from its first event or after `after`). When the connection
 * drops, it resumes from /jobs/{id}/events with Last-Event-ID = the last event applied, so each
 * event reaches `onEvent` exactly once. Rejects with an ApiError: the start's own refusal
 * (401, 404, 422, 429...), or status 0 / code `stream_lost` (with jobId and lastEventId) when
 * every reconnection failed.
 */
export async function followTurn(api, { start = null, jobId = null, after = null, signal, onJob, onEvent,
  onConnection }) {
  let lastId = after;
  let response;
  if (start) {
    response = await api.fetch('POST', '/api/v1/chat/stream',
      { body: start.body, headers: { 'Idempotency-Key': start.key }, signal });
    jobId = response.headers.get('X-Parley-Job');
    onJob?.(jobId, response.headers.get('X-Parley-Session'));
  } else {
    response = await openEvents(api, jobId, lastId, signal);
  }
  let failures = 0;
  for (;;) {
    try {
      for await (const { id, data } of readEvents(response)) {
        let event;
        try {
          event = JSON.parse(data);
        } catch {
          continue;
        }
        failures = 0;
        if (id) lastId = id;
        onEvent(event, id);
        if (event.type === 'done') return { jobId, lastEventId: lastId };
      }
    } catch (error) {
      if (signal?.aborted) throw aborted();
      // The body broke off (network, server restart): resume below.
    }
    if (signal?.aborted) throw aborted();
    response = null;
    while (!response) {
      if (failures >= RECONNECT_DELAYS_MS.length) {
        const lost = new ApiError(0, 'stream_lost', 'the event stream was lost', { job_id: jobId });
        lost.lastEventId = lastId;
        throw lost;
      }
      onConnection?.('reconnecting', failures + 1);
      await sleep(RECONNECT_DELAYS_MS[failures++], signal);
      try {
        response = await openEvents(api, jobId, lastId, signal);
        onConnection?.('live', 0);
      } catch (error) {
        if (error.name === 'AbortError') throw error;
        if (!(error instanceof ApiError) || !(error.status === 0 || error.status >= 500)) throw error;
      }
    }
  }
}

// -- turns still running, per session (so a reload reattaches) ------------------------------

const PENDING = 'parley.pending';
const MAX_STORED_IMAGE_CHARS = 1_500_000;

function scope(apiKey, sessionId) {
  return `${apiKey.slice(-8)}:${sessionId}`;
}

function readAll() {
  try {
    return JSON.parse(localStorage.getItem(PENDING)) || {};
  } catch {
    return {};
  }
}

function writeAll(all) {
  try {
    localStorage.setItem(PENDING, JSON.stringify(all));
  } catch {
    // Storage full or off: a reload then shows the answer once it is stored, not live.
  }
}

export const pendingTurns = {
  /** `{jobId, message, images, imageCount, regenerate, at, progress?: {answer, lastEventId}}` of the session's
   * running turn (`regenerate`: it answers the last message again, so it has no message of its own). */
  get(apiKey, sessionId) {
    return readAll()[scope(apiKey, sessionId)] || null;
  },
  set(apiKey, sessionId, { jobId, message = null, images = [], regenerate = false }) {
    const all = readAll();
    const size = images.reduce((total, image) => total + image.length, 0);
    all[scope(apiKey, sessionId)] = { jobId, message, images: size <= MAX_STORED_IMAGE_CHARS ? images : [],
      imageCount: images.length, regenerate, at: Date.now() };
    writeAll(all);
  },
  /** The answer as drawn and the id of the last event in it, kept together so they always agree. */
  progress(apiKey, sessionId, answer, lastEventId) {
    const all = readAll();
    const entry = all[scope(apiKey, sessionId)];
    if (!entry || !lastEventId) return;
    entry.progress = { answer, lastEventId };
    writeAll(all);
  },
  /** Forgets every kept turn (they hold message text): on signing out. */
  forgetAll() {
    try {
      localStorage.removeItem(PENDING);
    } catch {
      // Nothing kept, or storage off.
    }
  },
  clear(apiKey, sessionId) {
    const all = readAll();
    delete all[scope(apiKey, sessionId)];
    writeAll(all);
  },
};
