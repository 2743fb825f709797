// Usage: the tenant's turns, tokens and (when the service has prices) cost, by day, agent or conversation, read
// from GET /api/v1/usage. The sidebar's short panel and the dialog with the table.
import { apiPath, describeError } from '../api.js';
import { html, useEffect, useRef, useState } from '../html.js';

const NUMBER = new Intl.NumberFormat();
const DAY_MS = 86400000;
const PAGE = 100;

/** A UTC day as YYYY-MM-DD, `days` before today. */
function utcDay(days = 0) {
  return new Date(Date.now() - days * DAY_MS).toISOString().slice(0, 10);
}

function tokens(row) {
  return row.prompt_tokens + row.completion_tokens;
}

function money(value, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency, maximumFractionDigits: 6 }).format(value);
  } catch {
    return `${value} ${currency}`;
  }
}

/** The sidebar's panel: tokens of the last 30 days, and the button that opens the dialog. */
export function UsagePanel({ api, refresh, onShow }) {
  const [total, setTotal] = useState(null);
  const [missing, setMissing] = useState(false);

  useEffect(() => {
    api.get(apiPath('usage', { limit: 1 })).then((page) => setTotal(page))
      .catch((failure) => { if (failure.status === 404) setMissing(true); }); // a Parley without usage: no panel
  }, [refresh]);

  if (missing) return null;
  return html`
    <section class="panel" aria-labelledby="usage-title">
      <div class="panel-head">
        <h2 id="usage-title">Usage</h2>
        <button class="button small" onClick=${onShow} aria-label="Show usage">Show</button>
      </div>
      ${total && html`<p class="muted">${NUMBER.format(tokens(total.total))} tokens in 30 days${
        total.currency && total.total.cost !== undefined ? ` · ${money(total.total.cost, total.currency)}` : ''}</p>`}
    </section>`;
}

/** The table of GET /usage for a grouping and a range, a page at a time. */
export function UsageDialog({ api, onClose }) {
  const [query, setQuery] = useState({ group_by: 'day', since: utcDay(29), until: utcDay() });
  const [page, setPage] = useState(null);
  const [rows, setRows] = useState([]);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(false);
  const dialogRef = useRef(null);

  useEffect(() => { dialogRef.current.showModal(); }, []);
  useEffect(() => { load(null); }, [query]);

  async function load(cursor) {
    setLoading(true);
    setError(null);
    try {
      const next = await api.get(apiPath('usage', { ...query, limit: PAGE, cursor }));
      setRows((shown) => (cursor ? [...shown, ...next.data] : next.data));
      setPage(next);
    } catch (failure) {
      setError(failure);
      if (!cursor) { setRows([]); setPage(null); }
    } finally {
      setLoading(false);
    }
  }

  const set = (field) => (e) => setQuery({ ...query, [field]: e.currentTarget.value });
  const priced = Boolean(page?.currency);
  const byAgent = query.group_by === 'agent';
  const heading = { day: 'Day (UTC)', agent: 'Agent', session: 'Conversation' }[query.group_by];
  const cells = (row, label) => html`
    <th scope="row">${label}</th>
    <td>${NUMBER.format(row.turns)}</td><td>${NUMBER.format(row.prompt_tokens)}</td>
    <td>${NUMBER.format(row.completion_tokens)}</td><td>${NUMBER.format(row.cached_tokens)}</td>
    ${priced && html`<td>${money(row.cost ?? 0, page.currency)}</td>`}`;

  return html`
    <dialog class="agent-dialog usage-dialog" ref=${dialogRef} aria-labelledby="usage-dialog-title" onClose=${onClose}>
      <h2 id="usage-dialog-title">Usage</h2>
      <p class="hint">Turns and the tokens the model reported, counted as each turn ends; a day is a UTC day.</p>
      <div class="usage-query">
        <div class="field"><label for="usage-group">Group by</label>
          <select id="usage-group" value=${query.group_by} onChange=${set('group_by')}>
            <option value="day">Day</option><option value="agent">Agent</option>
            <option value="session">Conversation</option>
          </select></div>
        <div class="field"><label for="usage-since">From</label>
          <input id="usage-since" type="date" value=${query.since} onChange=${set('since')} /></div>
        <div class="field"><label for="usage-until">To</label>
          <input id="usage-until" type="date" value=${query.until} onChange=${set('until')} /></div>
      </div>
      ${error && html`<p class="field-error" role="alert">${describeError(error)}</p>`}
      ${loading && !page && html`<p class="muted">Loading…</p>`}
      ${page && !rows.length && html`<p class="muted">No usage in this range.</p>`}
      ${page && rows.length > 0 && html`<div class="usage-scroll"><table class="usage-table" aria-label="Usage">
        <thead><tr><th scope="col">${heading}</th><th scope="col">Turns</th><th scope="col">Prompt</th>
          <th scope="col">Completion</th><th scope="col">Cached</th>
          ${priced && html`<th scope="col">Cost (${page.currency})</th>`}</tr></thead>
        <tbody>${rows.map((row) => html`<tr key=${row.key} data-key=${row.key}>
          ${cells(row, byAgent ? (row.name || row.key) : row.key)}</tr>`)}</tbody>
        <tfoot><tr class="usage-total">${cells(page.total, 'Total')}</tr></tfoot>
      </table></div>`}
      <div class="actions">
        ${page?.next_cursor && html`<button type="button" class="button" disabled=${loading}
          onClick=${() => load(page.next_cursor)}>${loading ? 'Loading…' : 'More'}</button>`}
        <button type="button" class="button subtle" onClick=${() => dialogRef.current.close()}>Close</button>
      </div>
    </dialog>`;
}
