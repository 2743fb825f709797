// The page's only way to Parley: the public /api/v1/ routes with the key the user typed.

export const KEY_STORAGE = 'parley.apiKey';

/** An answer that was not a success, in the API's words: {status, code, message, details, retryAfter, jobId}. */
export class ApiError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = Array.isArray(extra.details) ? extra.details : [];
    this.retryAfter = extra.retryAfter ?? null;
    this.jobId = extra.job_id ?? null;
    this.field = typeof extra.field === 'string' ? extra.field : null;
  }
}

const NETWORK = 'network';

/** What went wrong, said for a person, with what to do about it. */
// An API error as a form's messages by field (`form` for what belongs to no field); a 409 that
// `conflictOnName` accepts is shown on the name field.
export function fieldErrors(error, conflictOnName = () => true) {
  const errors = {};
  for (const detail of error.details) {
    const field = String(detail.field || '').split('.')[0] || 'form';
    errors[field] = errors[field] ? `${errors[field]} ${detail.message}` : detail.message;
  }
  if (error.field) errors[error.field.split('.')[0]] = error.message;
  if (error.status === 409 && conflictOnName(error)) errors.name = error.message;
  if (!Object.keys(errors).length) errors.form = describeError(error);
  return errors;
}

export function describeError(error) {
  if (!(error instanceof ApiError)) return `Something went wrong: ${error?.message || error}`;
  switch (error.status) {
    case 0:
      return error.code === 'stream_lost'
        ? 'The connection dropped while the answer was coming in, and reconnecting failed.'
        : 'Parley cannot be reached. Check your connection, then try again.';
    case 401:
      return 'Parley refused the API key.';
    case 404:
      return `Not found: ${error.message}`;
    case 413:
      return `Too large: ${error.message}`;
    case 429:
      return error.retryAfter
        ? `Parley is busy (too many requests). Try again in ${error.retryAfter} s.`
        : 'Parley is busy (too many requests). Try again in a moment.';
    case 502:
      return `The model failed to answer: ${error.message}`;
    case 503:
      return 'Parley is not ready right now (its data store does not answer). Try again shortly.';
    case 504:
      return 'The answer took too long.';
    default:
      return error.message || `Request failed (HTTP ${error.status}).`;
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const detail = body && typeof body.error === 'object' ? body.error : {};
  const retry = response.headers.get('Retry-After');
  return new ApiError(response.status, detail.code || `http_${response.status}`,
    detail.message || response.statusText || `HTTP ${response.status}`,
    { ...detail, retryAfter: retry ? Number(retry) : null });
}

export class Api {
  /** `onUnauthorized` runs on any 401, so every view falls back to the sign-in the same way. */
  constructor(key, onUnauthorized = () => {}) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
  }

  async fetch(method, path, { body, headers = {}, signal } = {}) {
    const init = { method, signal, headers: { Authorization: `Bearer ${this.key}`, ...headers } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new ApiError(0, NETWORK, String(error.message || error));
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (error.status === 401) this.onUnauthorized(error);
      throw error;
    }
    return response;
  }

  /** JSON of a successful answer (null for 204). */
  async json(method, path, options = {}) {
    const response = await this.fetch(method, path, options);
    return response.status === 204 ? null : response.json();
  }

  get(path, options) { return this.json('GET', path, options); }
  post(path, body, options = {}) { return this.json('POST', path, { ...options, body }); }
  patch(path, body) { return this.json('PATCH', path, { body }); }
  put(path, body) { return this.json('PUT', path, { body }); }
  delete(path) { return this.json('DELETE', path); }
}

/** `/api/v1/...` with query parameters, leaving out empty ones. */
export function apiPath(path, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== '') params.set(name, value);
  }
  const text = params.toString();
  return `/api/v1/${path}${text ? `?${text}` : ''}`;
}

export const enc = encodeURIComponent;

/** A random key for Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
