// The selected agent's conversations, newest first, a page at a time.
import { apiPath, describeError, enc } from '../api.js';
import { html, useEffect, useState } from '../html.js';
import { TrashIcon } from '../icons.js';

const PAGE = 20;
const WHEN = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function sessionTitle(session) {
  const title = session.metadata && typeof session.metadata.title === 'string' ? session.metadata.title : '';
  return title || `Conversation ${session.session_id}`;
}

export function SessionList({ api, agent, currentId, refresh, onOpen, onNew, onDeleted }) {
  const [sessions, setSessions] = useState([]);
  const [cursor, setCursor] = useState(null);
  const [state, setState] = useState('loading');
  const [error, setError] = useState(null);

  async function load(after) {
    setState('loading');
    try {
      const page = await api.get(apiPath('sessions', { agent: agent.id, limit: PAGE, cursor: after }));
      setSessions((current) => (after ? [...current, ...page.data] : page.data));
      setCursor(page.next_cursor);
      setState('ready');
    } catch (failure) {
      setError(failure);
      setState('error');
    }
  }

  useEffect(() => { load(null); }, [agent.id, refresh]);

  async function remove(session) {
    if (!confirm(`Delete “${sessionTitle(session)}” and all its messages?`)) return;
    try {
      await api.delete(`/api/v1/sessions/${enc(session.session_id)}`);
      setSessions((current) => current.filter((s) => s.session_id !== session.session_id));
      onDeleted(session);
    } catch (failure) {
      setError(failure);
      setState('error');
    }
  }

  return html`
    <section class="panel" aria-labelledby="sessions-title">
      <div class="panel-head">
        <h2 id="sessions-title">Conversations</h2>
        <button class="button small" onClick=${onNew}>New</button>
      </div>
      ${state === 'error' && html`<p class="field-error" role="alert">${describeError(error)}</p>`}
      <ul class="list sessions">
        ${sessions.map((session) => html`<li key=${session.session_id}
            class=${session.session_id === currentId ? 'current' : ''}>
          <a href=${`?agent=${enc(agent.id)}&session=${enc(session.session_id)}`}
            aria-current=${session.session_id === currentId ? 'page' : undefined}
            onClick=${(e) => { e.preventDefault(); onOpen(session.session_id); }}>
            <span class="item-title">${sessionTitle(session)}</span>
            <span class="item-sub">${WHEN.format(new Date(session.created_at))} · ${session.message_count} ${session.message_count === 1 ? 'message' : 'messages'}</span>
          </a>
          <button class="icon-button" aria-label=${`Delete conversation “${sessionTitle(session)}”`}
            title="Delete" onClick=${() => remove(session)}><${TrashIcon} /></button>
        </li>`)}
      </ul>
      ${state === 'ready' && !sessions.length && html`<p class="muted">No conversations yet: say something.</p>`}
      ${state === 'loading' && html`<p class="muted">Loading…</p>`}
      ${cursor && state === 'ready' && html`<button class="button subtle" onClick=${() => load(cursor)}>Load more</button>`}
    </section>`;
}
