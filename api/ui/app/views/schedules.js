// Schedules: turns the service starts by itself, on a cron expression or every N seconds. The sidebar's short
// panel and the dialog that lists the tenant's schedules, creates one and deletes one.
import { apiPath, describeError, enc, fieldErrors } from '../api.js';
import { html, useEffect, useRef, useState } from '../html.js';
import { TrashIcon } from '../icons.js';

const WHEN = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function localZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

function zones() {
  try {
    return Intl.supportedValuesOf('timeZone');
  } catch {
    return [];
  }
}

function count(list) {
  return `${list.length} ${list.length === 1 ? 'schedule' : 'schedules'}`;
}

/** How often a schedule fires, in words. */
export function cadence(schedule) {
  if (schedule.cron) return `cron ${schedule.cron}${schedule.timezone ? ` (${schedule.timezone})` : ''}`;
  const seconds = Number(schedule.interval_s);
  if (seconds % 86400 === 0) return `every ${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `every ${seconds / 3600} h`;
  if (seconds % 60 === 0) return `every ${seconds / 60} min`;
  return `every ${seconds} s`;
}

function nextRun(schedule) {
  const at = schedule.next_run_at ? new Date(schedule.next_run_at) : null;
  return at && !Number.isNaN(at.getTime()) ? WHEN.format(at) : '—';
}

/** The sidebar's panel: how many schedules, and the button that opens the dialog. */
export function SchedulesPanel({ api, refresh, onManage }) {
  const [schedules, setSchedules] = useState(null);
  const [error, setError] = useState(null);
  const [missing, setMissing] = useState(false);

  useEffect(() => {
    api.get(apiPath('schedules')).then((list) => { setSchedules(listOf(list)); setError(null); })
      .catch((failure) => {
        if (failure.status === 404) setMissing(true); // a Parley without schedules: no panel
        else if (failure.status !== 401) setError(failure);
      });
  }, [refresh]);

  if (missing) return null;
  return html`
    <section class="panel" aria-labelledby="schedules-title">
      <div class="panel-head">
        <h2 id="schedules-title">Schedules</h2>
        <button class="button small" onClick=${onManage} aria-label="Manage schedules">Manage</button>
      </div>
      ${error && html`<p class="field-error">${describeError(error)}</p>`}
      ${schedules && html`<p class="muted">${schedules.length ? count(schedules) : 'None yet: an agent can run on a timer.'}</p>`}
    </section>`;
}

/** GET /schedules as a list, whether it answers an array or a page ({data}). */
function listOf(answer) {
  return Array.isArray(answer) ? answer : (answer?.data || []);
}

function emptyForm(agent) {
  return { agent: agent?.id || '', message: '', session_id: '', every: 'interval', cron: '', interval_s: '3600',
    timezone: localZone() };
}

/** The request body, or {errors} for what cannot be sent. */
function requestBody(values) {
  const errors = {};
  const body = { agent: values.agent, message: values.message };
  if (!body.agent) errors.agent = 'Choose an agent.';
  if (!values.message.trim()) errors.message = 'The message the agent gets each time is required.';
  if (values.session_id.trim()) body.session_id = values.session_id.trim();
  if (values.every === 'cron') {
    const cron = values.cron.trim().split(/\s+/).filter(Boolean);
    if (cron.length !== 5) errors.cron = 'Five fields: minute, hour, day of month, month, day of week.';
    body.cron = cron.join(' ');
    if (values.timezone.trim()) body.timezone = values.timezone.trim();
  } else {
    const seconds = Number(values.interval_s);
    if (!Number.isInteger(seconds) || seconds < 1) errors.interval_s = 'A whole number of seconds, at least 1.';
    body.interval_s = seconds;
  }
  return { body, errors };
}

function ScheduleItem({ schedule, agentName, onRemove }) {
  return html`<li class="schedule" data-schedule=${schedule.id}>
    <div class="mcp-server-head">
      <span class="item-title">${agentName}: ${cadence(schedule)}</span>
      <button type="button" class="icon-button" aria-label=${`Delete schedule “${schedule.message}”`} title="Delete"
        onClick=${() => onRemove(schedule)}><${TrashIcon} /></button>
    </div>
    <p class="schedule-message">${schedule.message}</p>
    <p class="hint">Next run: ${nextRun(schedule)}${schedule.session_id ? ` · conversation ${schedule.session_id}` : ''}</p>
  </li>`;
}

/** Lists the tenant's schedules, creates one (agent, message, cron or interval, timezone) and deletes one. */
export function SchedulesDialog({ api, agents, agent, onChanged, onClose, onAnnounce }) {
  const [schedules, setSchedules] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [values, setValues] = useState(() => emptyForm(agent));
  const [errors, setErrors] = useState({});
  const [saving, setSaving] = useState(false);
  const dialogRef = useRef(null);
  const focusError = useRef(false); // after refused input: focus its first field once it is drawn as invalid

  useEffect(() => {
    if (!focusError.current) return;
    focusError.current = false;
    dialogRef.current?.querySelector('[aria-invalid="true"]')?.focus();
  }, [errors]);

  useEffect(() => {
    dialogRef.current.showModal();
    api.get(apiPath('schedules')).then((list) => setSchedules(listOf(list))).catch(setLoadError);
  }, []);

  const set = (field) => (e) => setValues({ ...values, [field]: e.currentTarget.value });
  const nameOf = (schedule) => {
    const ref = schedule.agent_id || schedule.agent;
    const found = agents.find((a) => a.id === ref || a.name === ref);
    return schedule.agent_name || found?.name || ref || '?';
  };

  async function add(event) {
    event.preventDefault();
    const { body, errors: local } = requestBody(values);
    if (Object.keys(local).length) {
      focusError.current = true;
      setErrors(local);
      return;
    }
    setSaving(true);
    setErrors({});
    try {
      const schedule = await api.post(apiPath('schedules'), body);
      setSchedules((list) => [...(list || []), schedule]);
      setValues({ ...emptyForm(agent), agent: values.agent });
      onChanged();
      onAnnounce(`Schedule created: ${cadence(schedule)}, next run ${nextRun(schedule)}.`);
    } catch (error) {
      focusError.current = true;
      setErrors(fieldErrors(error, () => false));
    } finally {
      setSaving(false);
    }
  }

  async function remove(schedule) {
    if (!confirm(`Delete the schedule “${schedule.message}” (${cadence(schedule)})?`)) return;
    try {
      await api.delete(`/api/v1/schedules/${enc(schedule.id)}`);
      setSchedules((list) => list.filter((s) => s.id !== schedule.id));
      onChanged();
      onAnnounce('Schedule deleted.');
    } catch (error) {
      setErrors({ form: describeError(error) });
    }
  }

  const described = (field) => `sched-${field}-hint sched-${field}-error`;
  const field = (name, label, hint, control) => html`<div class=${`field${errors[name] ? ' has-error' : ''}`}>
    <label for=${`sched-${name}`}>${label}</label>
    ${control}
    ${hint && html`<p class="hint" id=${`sched-${name}-hint`}>${hint}</p>`}
    <p class="field-error" id=${`sched-${name}-error`}>${errors[name] || ''}</p>
  </div>`;
  const input = (name, props = {}) => html`<input id=${`sched-${name}`} value=${values[name]} onInput=${set(name)}
    spellcheck=${false} autocomplete="off" aria-invalid=${errors[name] ? 'true' : 'false'} aria-describedby=${described(name)}
    ...${props} />`;

  return html`
    <dialog class="agent-dialog mcp-dialog schedules-dialog" ref=${dialogRef} aria-labelledby="schedules-dialog-title"
      onClose=${onClose}>
      <h2 id="schedules-dialog-title">Schedules</h2>
      <p class="hint">Each time a schedule fires, its agent gets the message as a new turn, as if someone had sent it.</p>
      ${loadError && html`<p class="field-error" role="alert">${describeError(loadError)}</p>`}
      ${schedules === null && !loadError && html`<p class="muted">Loading…</p>`}
      ${schedules && !schedules.length && html`<p class="muted">No schedule yet.</p>`}
      ${schedules && schedules.length > 0 && html`<ul class="list mcp-servers" aria-label="Your schedules">
        ${schedules.map((s) => html`<${ScheduleItem} key=${s.id} schedule=${s} agentName=${nameOf(s)} onRemove=${remove} />`)}
      </ul>`}
      <form onSubmit=${add} novalidate aria-labelledby="schedules-add-title">
        <h3 id="schedules-add-title">New schedule</h3>
        ${errors.form && html`<p class="field-error" role="alert">${errors.form}</p>`}
        ${field('agent', 'Agent', null, html`<select id="sched-agent" value=${values.agent} onChange=${set('agent')}
          aria-invalid=${errors.agent ? 'true' : 'false'} aria-describedby=${described('agent')}>
          ${agents.map((a) => html`<option key=${a.id} value=${a.id}>${a.name}</option>`)}
        </select>`)}
        ${field('message', 'Message', 'What the agent is told each time.', html`<textarea id="sched-message" rows="2"
          value=${values.message} onInput=${set('message')} aria-invalid=${errors.message ? 'true' : 'false'}
          aria-describedby=${described('message')}></textarea>`)}
        <fieldset class="field schedule-every">
          <legend>Runs</legend>
          <label class="check"><input type="radio" name="sched-every" value="interval" checked=${values.every === 'interval'}
            onChange=${() => setValues({ ...values, every: 'interval' })} /> Every N seconds</label>
          <label class="check"><input type="radio" name="sched-every" value="cron" checked=${values.every === 'cron'}
            onChange=${() => setValues({ ...values, every: 'cron' })} /> On a cron schedule</label>
        </fieldset>
        ${values.every === 'interval'
          ? field('interval_s', 'Interval (seconds)', '3600 is every hour, 86400 every day.',
            input('interval_s', { type: 'number', min: '1', step: '1', inputmode: 'numeric' }))
          : html`${field('cron', 'Cron expression', 'Five fields: minute hour day-of-month month day-of-week; 0 9 * * 1-5 is 9:00 on weekdays.',
            input('cron', { placeholder: '0 9 * * 1-5' }))}
            ${field('timezone', 'Timezone', 'The cron expression\u2019s times are in this zone (IANA name, e.g. Europe/Paris).',
              input('timezone', { list: 'sched-zones' }))}
            <datalist id="sched-zones">${zones().map((zone) => html`<option key=${zone} value=${zone} />`)}</datalist>`}
        ${field('session_id', 'Conversation (optional)', 'A session id: every run goes on in that conversation.',
          input('session_id'))}
        <div class="actions">
          <button type="submit" class="button primary" disabled=${saving}>${saving ? 'Creating…' : 'Create schedule'}</button>
          <button type="button" class="button subtle" onClick=${() => dialogRef.current.close()}>Close</button>
        </div>
      </form>
    </dialog>`;
}
