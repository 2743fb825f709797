// Agents: the list to pick from, and the form that creates or edits one.
import { apiPath, describeError, enc, fieldErrors } from '../api.js';
import { html, useEffect, useRef, useState } from '../html.js';
import { EditIcon } from '../icons.js';

export function AgentList({ agents, currentId, onOpen, onNew, onEdit }) {
  return html`
    <section class="panel" aria-labelledby="agents-title">
      <div class="panel-head">
        <h2 id="agents-title">Agents</h2>
        <button class="button small" onClick=${onNew}>New agent</button>
      </div>
      <ul class="list agents">
        ${agents.map((agent) => html`<li key=${agent.id} class=${agent.id === currentId ? 'current' : ''}>
          <a href=${`?agent=${enc(agent.id)}`} aria-current=${agent.id === currentId ? 'page' : undefined}
            onClick=${(e) => { e.preventDefault(); onOpen(agent.id); }}>
            <span class="item-title">${agent.name}</span>
            ${agent.description && html`<span class="item-sub">${agent.description}</span>`}
          </a>
          <button class="icon-button" aria-label=${`${agent.source === 'file' ? 'View' : 'Edit'} agent ${agent.name}`}
            title=${agent.source === 'file' ? 'View' : 'Edit'} onClick=${() => onEdit(agent)}>
            <${EditIcon} />
          </button>
        </li>`)}
      </ul>
      ${!agents.length && html`<p class="muted">No agent yet: create one.</p>`}
    </section>`;
}

const TEXT_FIELDS = ['name', 'description', 'model', 'context', 'first_message', 'instructions'];
/** Optional whole numbers: empty leaves the server's default (PATCH: clears the agent's own). */
const NUMBER_FIELDS = ['max_turns', 'max_tool_steps', 'max_turn_tokens'];

function formValues(agent) {
  const shape = agent?.response_shape;
  return {
    name: agent?.name ?? '', description: agent?.description ?? '', model: agent?.model ?? '',
    context: agent?.context ?? '', first_message: agent?.first_message ?? '', instructions: agent?.instructions ?? '',
    response_shape: shape === null || shape === undefined ? '' : typeof shape === 'string' ? shape : JSON.stringify(shape, null, 2),
    tools: agent?.tools ?? [], approval: (agent?.approval ?? []).join(', '),
    fallback_models: (agent?.fallback_models ?? []).join(', '),
    ...Object.fromEntries(NUMBER_FIELDS.map((field) => [field, agent?.[field] ?? ''])),
  };
}

/** The request body, or {errors} for what cannot be sent. PATCH clears with null where the API allows. */
function requestBody(values, editing) {
  const body = {};
  const errors = {};
  for (const field of TEXT_FIELDS) body[field] = values[field].trim ? values[field].trim() : values[field];
  if (!body.model) {
    if (editing) body.model = null; else delete body.model;
  }
  const shape = values.response_shape.trim();
  if (!shape) {
    if (editing) body.response_shape = null;
  } else if (shape.startsWith('{')) {
    try {
      body.response_shape = JSON.parse(shape);
    } catch (error) {
      errors.response_shape = `Not valid JSON: ${error.message}`;
    }
  } else {
    body.response_shape = shape;
  }
  body.tools = values.tools;
  body.approval = splitNames(values.approval);
  body.fallback_models = splitNames(values.fallback_models);
  for (const field of NUMBER_FIELDS) {
    const number = String(values[field]).trim();
    if (number) body[field] = Number(number);
    else if (editing) body[field] = null;
  }
  if (!body.name) errors.name = 'A name is required.';
  return { body, errors };
}

/** A comma-separated list of names as the API's list (blanks dropped). */
function splitNames(text) {
  return text.split(',').map((name) => name.trim()).filter(Boolean);
}

function Field({ id, label, hint, error, children }) {
  return html`<div class=${`field${error ? ' has-error' : ''}`}>
    <label for=${id}>${label}</label>
    ${children}
    ${hint && html`<p class="hint" id=${`${id}-hint`}>${hint}</p>`}
    <p class="field-error" id=${`${id}-error`}>${error || ''}</p>
  </div>`;
}

/** The tools to tick: each as listed, and after an MCP server's tools its pattern `mcp:<server>/*`. */
function toolChoices(tools) {
  const choices = [];
  tools.forEach((tool, i) => {
    choices.push(tool);
    const server = /^mcp:([^/]+)\//.exec(tool.name)?.[1];
    const next = tools[i + 1]?.name ?? '';
    if (server && !next.startsWith(`mcp:${server}/`)) {
      choices.push({ name: `mcp:${server}/*`, description: `every tool of ${server}, also ones it adds later` });
    }
  });
  return choices;
}

function ToolsField({ tools, value, onChange, error, readOnly }) {
  if (tools === null) {
    return html`<${Field} id="agent-tools" label="Tools" error=${error}
        hint="Names of registered tools, separated by commas.">
      <input id="agent-tools" value=${value.join(', ')} readOnly=${readOnly}
        aria-invalid=${error ? 'true' : 'false'} aria-describedby="agent-tools-hint agent-tools-error"
        onInput=${(e) => onChange(e.currentTarget.value.split(',').map((t) => t.trim()).filter(Boolean))} />
    </${Field}>`;
  }
  return html`<fieldset class=${`field tools${error ? ' has-error' : ''}`} aria-describedby="agent-tools-error">
    <legend>Tools</legend>
    ${!tools.length && html`<p class="hint">This Parley has no tools registered.</p>`}
    ${toolChoices(tools).map((tool) => html`<label class="check" key=${tool.name}>
      <input type="checkbox" checked=${value.includes(tool.name)} disabled=${readOnly}
        onChange=${(e) => onChange(e.currentTarget.checked ? [...value, tool.name] : value.filter((t) => t !== tool.name))} />
      <span><strong>${tool.name}</strong>${tool.description && html` — ${tool.description}`}</span>
    </label>`)}
    <p class="field-error" id="agent-tools-error">${error || ''}</p>
  </fieldset>`;
}

export function AgentForm({ api, agent, onSaved, onDeleted, onClose }) {
  const editing = Boolean(agent);
  const readOnly = agent?.source === 'file';
  const [values, setValues] = useState(() => formValues(agent));
  const [errors, setErrors] = useState({});
  const [saving, setSaving] = useState(false);
  const [tools, setTools] = useState(null);
  const dialogRef = useRef(null);

  useEffect(() => {
    dialogRef.current.showModal();
    api.get(apiPath('tools')).then((list) => { if (Array.isArray(list)) setTools(list); }).catch(() => setTools(null));
  }, []);

  const set = (field) => (e) => setValues({ ...values, [field]: e.currentTarget.value });
  const text = (field, label, hint, multiline = false) => {
    const props = { id: `agent-${field}`, value: values[field], onInput: set(field), readOnly,
      'aria-invalid': errors[field] ? 'true' : 'false',
      'aria-describedby': `agent-${field}-hint agent-${field}-error` };
    return html`<${Field} id=${`agent-${field}`} label=${label} hint=${hint} error=${errors[field]}>
      ${multiline ? html`<textarea rows="3" ...${props}></textarea>` : html`<input ...${props} />`}
    </${Field}>`;
  };
  const number = (field, label, hint) => html`<${Field} id=${`agent-${field}`} label=${label} hint=${hint}
      error=${errors[field]}>
    <input id=${`agent-${field}`} type="number" min="1" step="1" inputmode="numeric" value=${values[field]}
      readOnly=${readOnly} onInput=${set(field)} aria-invalid=${errors[field] ? 'true' : 'false'}
      aria-describedby=${`agent-${field}-hint agent-${field}-error`} />
  </${Field}>`;

  async function submit(event) {
    event.preventDefault();
    if (readOnly) return onClose();
    const { body, errors: local } = requestBody(values, editing);
    if (Object.keys(local).length) {
      setErrors(local);
      return;
    }
    setSaving(true);
    try {
      const saved = editing ? await api.patch(`/api/v1/agents/${enc(agent.id)}`, body) : await api.post(apiPath('agents'), body);
      onSaved(saved);
    } catch (error) {
      setErrors(fieldErrors(error, (conflict) => /name/i.test(conflict.message)));
      setSaving(false);
      const first = dialogRef.current.querySelector('[aria-invalid="true"]');
      first?.focus();
    }
  }

  async function remove() {
    if (!confirm(`Delete the agent “${agent.name}”? Its conversations stay readable.`)) return;
    try {
      await api.delete(`/api/v1/agents/${enc(agent.id)}`);
      onDeleted(agent);
    } catch (error) {
      setErrors({ form: describeError(error) });
    }
  }

  const title = readOnly ? `Agent ${agent.name}` : editing ? `Edit ${agent.name}` : 'New agent';
  return html`
    <dialog class="agent-dialog" ref=${dialogRef} aria-labelledby="agent-form-title" onClose=${onClose}>
      <form onSubmit=${submit} novalidate>
        <h2 id="agent-form-title">${title}</h2>
        ${readOnly && html`<p class="notice">This agent comes from the agents file (PARLEY_AGENTS_FILE): it can be read here, and changed only in that file.</p>`}
        ${errors.form && html`<p class="field-error" role="alert">${errors.form}</p>`}
        ${text('name', 'Name', 'Unique among your agents.')}
        ${text('description', 'Description', '')}
        ${text('model', 'Model', editing ? '' : 'Empty: the server default (PARLEY_MODEL).')}
        ${text('context', 'Context', 'What the agent knows: its system prompt.', true)}
        ${text('first_message', 'First message', 'Its opening line in every new conversation.', true)}
        ${text('instructions', 'Instructions', 'How it runs the conversation.', true)}
        ${text('response_shape', 'Response shape', 'Optional. A JSON object such as {"answer": "string"}, or words.', true)}
        <${ToolsField} tools=${tools} value=${values.tools} error=${errors.tools} readOnly=${readOnly}
          onChange=${(list) => setValues({ ...values, tools: list })} />
        ${text('approval', 'Ask before running', 'Tools whose calls wait for your Approve / Deny in the conversation, '
          + 'separated by commas: names or patterns (http_get, mcp:github/*, or * for every tool).')}
        ${text('fallback_models', 'Fallback models', 'Optional. Models tried in order, separated by commas, when '
          + 'the model still fails (rate limit, server error, timeout) after its retries.')}
        ${number('max_turns', 'Max turns', 'Optional. After this many exchanges the agent closes the conversation '
          + 'politely.')}
        ${number('max_tool_steps', 'Max tool steps', 'Optional. Tool steps one turn may take before it answers that '
          + 'it stopped; empty: the server default (PARLEY_MAX_TOOL_STEPS).')}
        ${number('max_turn_tokens', 'Max tokens per turn', 'Optional. Tokens one turn may use over all its model '
          + 'calls before it stops with an answer saying so.')}
        <div class="actions">
          ${!readOnly && html`<button type="submit" class="button primary" disabled=${saving}>
            ${saving ? 'Saving…' : editing ? 'Save' : 'Create agent'}</button>`}
          <button type="button" class="button subtle" onClick=${() => dialogRef.current.close()}>${readOnly ? 'Close' : 'Cancel'}</button>
          ${editing && !readOnly && html`<button type="button" class="button danger push" onClick=${remove}>Delete agent</button>`}
        </div>
      </form>
    </dialog>`;
}
