// MCP servers: the sidebar's short list, and the dialog that lists, adds and removes the tenant's servers.
// Agents name their tools `mcp:<server>/<tool>`; the agent form ticks them from GET /api/v1/tools.
import { apiPath, describeError, enc, fieldErrors } from '../api.js';
import { html, useEffect, useRef, useState } from '../html.js';
import { TrashIcon } from '../icons.js';

function toolCount(server) {
  const count = (server.tools || []).length;
  return `${count} ${count === 1 ? 'tool' : 'tools'}`;
}

/** The sidebar's panel: the servers by name, and the button that opens the dialog. */
export function McpPanel({ api, refresh, onManage }) {
  const [servers, setServers] = useState(null);
  const [error, setError] = useState(null);
  const [missing, setMissing] = useState(false);

  useEffect(() => {
    api.get(apiPath('mcp-servers')).then((list) => { setServers(list); setError(null); })
      .catch((failure) => {
        if (failure.status === 404) setMissing(true); // a Parley without MCP servers: no panel
        else if (failure.status !== 401) setError(failure);
      });
  }, [refresh]);

  if (missing) return null;
  return html`
    <section class="panel" aria-labelledby="mcp-title">
      <div class="panel-head">
        <h2 id="mcp-title">MCP servers</h2>
        <button class="button small" onClick=${onManage}>Manage</button>
      </div>
      ${error && html`<p class="field-error">${describeError(error)}</p>`}
      ${servers && !servers.length && html`<p class="muted">None yet: add one to give agents its tools.</p>`}
      ${servers && servers.length > 0 && html`<ul class="list mcp-names">
        ${servers.map((server) => html`<li key=${server.name}><span class="item-plain">
          <span class="item-title">${server.name}</span><span class="item-sub">${toolCount(server)}</span></span></li>`)}
      </ul>`}
    </section>`;
}

const EMPTY_FORM = { name: '', url: '', headers: [], allowed_tools: '' };

/** The request body, or {errors} for what cannot be sent. */
function requestBody(values) {
  const errors = {};
  const body = { name: values.name.trim(), url: values.url.trim() };
  if (!body.name) errors.name = 'A name is required.';
  if (!body.url) errors.url = 'The server\u2019s URL is required (its Streamable HTTP endpoint).';
  const headers = {};
  for (const row of values.headers) {
    const name = row.name.trim();
    if (!name && !row.value) continue;
    if (!name) errors.headers = 'Every header needs a name.';
    else headers[name] = row.value;
  }
  if (Object.keys(headers).length) body.headers = headers;
  const allowed = values.allowed_tools.split(',').map((tool) => tool.trim()).filter(Boolean);
  if (allowed.length) body.allowed_tools = allowed;
  return { body, errors };
}

function ServerItem({ server, onRemove }) {
  const headers = server.header_names || [];
  const allowed = server.allowed_tools;
  return html`<li class="mcp-server" data-server=${server.name}>
    <div class="mcp-server-head">
      <span class="item-title">${server.name}</span>
      <button type="button" class="icon-button" aria-label=${`Remove MCP server ${server.name}`} title="Remove"
        onClick=${() => onRemove(server)}><${TrashIcon} /></button>
    </div>
    <code class="mcp-url">${server.url}</code>
    <p class="hint">${headers.length ? `Headers: ${headers.join(', ')} (values hidden)` : 'No headers'}${' · '}${
      allowed && allowed.length ? `Allowed tools: ${allowed.join(', ')}` : 'Every tool allowed'}</p>
    <p class="mcp-tools">${toolCount(server)}${(server.tools || []).length ? ': ' : ''}
      ${(server.tools || []).map((tool, i) => html`${i ? ', ' : ''}<code title=${tool.description || ''}>${tool.name}</code>`)}</p>
  </li>`;
}

function HeaderRows({ rows, onChange, error }) {
  const set = (i, field) => (e) => onChange(rows.map((row, j) => (j === i ? { ...row, [field]: e.currentTarget.value } : row)));
  return html`<fieldset class=${`field mcp-headers${error ? ' has-error' : ''}`} aria-describedby="mcp-headers-hint mcp-headers-error">
    <legend>Headers</legend>
    ${rows.map((row, i) => html`<div class="header-row" key=${i}>
      <input aria-label=${`Header ${i + 1} name`} placeholder="Authorization" value=${row.name} onInput=${set(i, 'name')}
        autocomplete="off" spellcheck="false" />
      <input aria-label=${`Header ${i + 1} value`} type="password" placeholder="Bearer …" value=${row.value}
        onInput=${set(i, 'value')} autocomplete="off" spellcheck="false" />
      <button type="button" class="icon-button" aria-label=${`Remove header ${i + 1}`}
        onClick=${() => onChange(rows.filter((_, j) => j !== i))}><${TrashIcon} /></button>
    </div>`)}
    <button type="button" class="button small" onClick=${() => onChange([...rows, { name: '', value: '' }])}>Add a header</button>
    <p class="hint" id="mcp-headers-hint">Sent to the server with every request (an API key, for example). Parley keeps
      the values and never shows them again.</p>
    <p class="field-error" id="mcp-headers-error">${error || ''}</p>
  </fieldset>`;
}

/** Lists the tenant's MCP servers, adds one (name, URL, headers, allowed tools) and removes one. */
export function McpServersDialog({ api, onChanged, onClose, onAnnounce }) {
  const [servers, setServers] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [values, setValues] = useState(EMPTY_FORM);
  const [errors, setErrors] = useState({});
  const [saving, setSaving] = useState(false);
  const dialogRef = useRef(null);

  useEffect(() => {
    dialogRef.current.showModal();
    api.get(apiPath('mcp-servers')).then(setServers).catch(setLoadError);
  }, []);

  const set = (field) => (e) => setValues({ ...values, [field]: e.currentTarget.value });

  async function add(event) {
    event.preventDefault();
    const { body, errors: local } = requestBody(values);
    if (Object.keys(local).length) {
      setErrors(local);
      return;
    }
    setSaving(true);
    setErrors({});
    try {
      const server = await api.post(apiPath('mcp-servers'), body);
      setServers((list) => [...(list || []).filter((s) => s.name !== server.name), server]);
      setValues(EMPTY_FORM);
      onChanged();
      onAnnounce(`MCP server ${server.name} added with ${toolCount(server)}.`);
    } catch (error) {
      setErrors(fieldErrors(error));
      dialogRef.current.querySelector('[aria-invalid="true"]')?.focus();
    } finally {
      setSaving(false);
    }
  }

  async function remove(server) {
    if (!confirm(`Remove the MCP server “${server.name}”? Agents that name its tools no longer get them.`)) return;
    try {
      await api.delete(`/api/v1/mcp-servers/${enc(server.name)}`);
      setServers((list) => list.filter((s) => s.name !== server.name));
      onChanged();
      onAnnounce(`MCP server ${server.name} removed.`);
    } catch (error) {
      setErrors({ form: describeError(error) });
    }
  }

  const input = (field, label, hint, props = {}) => html`<div class=${`field${errors[field] ? ' has-error' : ''}`}>
    <label for=${`mcp-${field}`}>${label}</label>
    <input id=${`mcp-${field}`} value=${values[field]} onInput=${set(field)} spellcheck="false"
      aria-invalid=${errors[field] ? 'true' : 'false'} aria-describedby=${`mcp-${field}-hint mcp-${field}-error`} ...${props} />
    ${hint && html`<p class="hint" id=${`mcp-${field}-hint`}>${hint}</p>`}
    <p class="field-error" id=${`mcp-${field}-error`}>${errors[field] || ''}</p>
  </div>`;

  return html`
    <dialog class="agent-dialog mcp-dialog" ref=${dialogRef} aria-labelledby="mcp-dialog-title" onClose=${onClose}>
      <h2 id="mcp-dialog-title">MCP servers</h2>
      <p class="hint">Remote tools over the Model Context Protocol (Streamable HTTP). An agent uses them when its tools
        name <code>${'mcp:<server>/<tool>'}</code> or <code>${'mcp:<server>/*'}</code>.</p>
      ${loadError && html`<p class="field-error" role="alert">${describeError(loadError)}</p>`}
      ${servers === null && !loadError && html`<p class="muted">Loading…</p>`}
      ${servers && !servers.length && html`<p class="muted">No MCP server yet.</p>`}
      ${servers && servers.length > 0 && html`<ul class="list mcp-servers" aria-label="Your MCP servers">
        ${servers.map((server) => html`<${ServerItem} key=${server.name} server=${server} onRemove=${remove} />`)}
      </ul>`}
      <form onSubmit=${add} novalidate aria-labelledby="mcp-add-title">
        <h3 id="mcp-add-title">Add a server</h3>
        ${errors.form && html`<p class="field-error" role="alert">${errors.form}</p>`}
        ${input('name', 'Name', 'Letters, digits, - and _: agents name its tools mcp:<name>/<tool>.', { autocomplete: 'off' })}
        ${input('url', 'URL', 'Its Streamable HTTP endpoint, for example https://mcp.example.com/mcp.', { type: 'url', inputmode: 'url' })}
        <${HeaderRows} rows=${values.headers} error=${errors.headers}
          onChange=${(rows) => setValues({ ...values, headers: rows })} />
        ${input('allowed_tools', 'Allowed tools', 'Optional, separated by commas. Empty: every tool the server offers.')}
        <div class="actions">
          <button type="submit" class="button primary" disabled=${saving}>${saving ? 'Adding…' : 'Add server'}</button>
          <button type="button" class="button subtle" onClick=${() => dialogRef.current.close()}>Close</button>
        </div>
      </form>
    </dialog>`;
}
