// The one place that turns Parley's data into what the page shows:
//   applyEvent(answer, event)    a live stream event  -> the answer being built
//   historyEntries(messages)     stored messages      -> user and answer entries
// Both produce the same answer shape, drawn by views/messages.js:
//   {steps: [{kind: 'thought', text} | {kind: 'tool', callId, name, args, result, ok, approval?, decision?}
//            | {kind: 'steered', text}],
//    thinking, text, structured, phase, statusText, error, done}
// A `steered` step is a message the person sent while the turn ran (`on_busy: "steer"`): it joined the turn
// before its next model call, so it is drawn where it joined, between the steps before it and the answer after.
// A tool step's `approval` is 'pending' while the call waits for a person (Approve / Deny are drawn), then
// 'approved' or 'denied' once its `tool_result` came; `decision` is what this page sent ({state, approve, note}).
// A call's events: `tool_execution`, `approval_required`, `status: waiting`, then after the decisions
// `status: resumed` and its `tool_result` (a denied one: ok false, preview `denied: <reason>`).

/** A new, empty answer (phase: sending -> queued -> started [-> waiting -> started] -> streaming -> done | error
 * | canceled). */
export function newAnswer() {
  return { steps: [], thinking: '', text: '', structured: undefined, intent: null, phase: 'sending',
    statusText: 'Sending…', error: null, done: false, jobId: null };
}

function parseArgs(value) {
  if (typeof value !== 'string') return value ?? {};
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

const DENIAL = /^denied\b|\ba person denied this call\b/;

/** Whether a failed call's result says a person denied it (`preview` live, the tool message's content stored):
 * `denied: <reason>` or `error: a person denied this call (<reason>); it did not run`. */
export function isDenial(ok, text) {
  return ok === false && typeof text === 'string' && DENIAL.test(text);
}

function withToolResult(steps, { call_id: callId, tool_name: name, preview, ok }) {
  const index = steps.findIndex((step) => step.kind === 'tool' && step.result === null
    && (callId ? step.callId === callId : step.name === name));
  const result = { result: preview ?? '', ok: ok !== false };
  if (index < 0) return [...steps, { kind: 'tool', callId, name, args: null, ...result }];
  return steps.map((step, i) => {
    if (i !== index) return step;
    const denied = isDenial(ok, preview) || (ok === false && step.decision?.approve === false);
    const approval = step.approval ? (denied ? 'denied' : 'approved') : undefined;
    return { ...step, ...result, ...(approval ? { approval } : {}) };
  });
}

/** The steps with tool call `callId` updated by `change(step)`, or `added` appended when no step has it yet. */
function withCall(steps, callId, change, added) {
  const index = callId ? steps.findIndex((step) => step.kind === 'tool' && step.callId === callId) : -1;
  if (index < 0) return [...steps, added];
  return steps.map((step, i) => (i === index ? change(step) : step));
}

/** A call that waits for a person: `approval_required` live, or a job's `pending` entry after a reload. */
export function withApproval(steps, { call_id: callId, tool_name: name, args }) {
  const parsed = parseArgs(args);
  return withCall(steps, callId,
    (step) => (step.result === null
      ? { ...step, name: name ?? step.name, args: args === undefined ? step.args : parsed, approval: 'pending' } : step),
    { kind: 'tool', callId: callId ?? null, name, args: parsed, result: null, ok: null, approval: 'pending' });
}

/** What this page sent for call `callId` (`{state: 'sending' | 'sent' | 'error', approve, note}`), drawn on it. */
export function withDecision(answer, callId, decision) {
  return { ...answer, steps: answer.steps.map((step) => (step.kind === 'tool' && step.callId === callId
    ? { ...step, decision } : step)) };
}

/** The calls of an answer that wait for a decision. */
export function pendingApprovals(answer) {
  return answer.steps.filter((step) => step.kind === 'tool' && step.approval === 'pending' && step.result === null);
}

/** The answer after one event of the turn's stream (returns a new object; never mutates). */
export function applyEvent(answer, event) {
  switch (event.type) {
    case 'session':
      return { ...answer, jobId: event.job_id || answer.jobId };
    case 'status':
      if (event.message === 'retrying') {
        // The contract: deltas after a rerun replace the ones before it.
        return { ...newAnswer(), jobId: answer.jobId, phase: 'started',
          statusText: `Retrying (attempt ${event.attempt ?? '?'})…` };
      }
      if (event.message === 'repairing') {
        // The answer did not fit the agent's shape; the deltas after this replace the ones before.
        return { ...answer, text: '', statusText: 'Repairing the answer\u2019s shape…' };
      }
      if (event.message === 'queued') return { ...answer, phase: 'queued', statusText: 'Waiting in the queue…' };
      if (event.message === 'started') return { ...answer, phase: 'started', statusText: 'Thinking…' };
      if (event.message === 'waiting') {
        return { ...answer, phase: 'waiting', statusText: 'Waiting for your decision on a tool call…' };
      }
      if (event.message === 'resumed') return { ...answer, phase: 'started', statusText: 'Going on…' };
      return { ...answer, statusText: String(event.message ?? '') };
    case 'thinking':
      return { ...answer, thinking: answer.thinking + (event.message ?? '') };
    case 'delta':
      return { ...answer, phase: 'streaming', statusText: 'Answering…', text: answer.text + (event.content ?? '') };
    case 'llm_thought':
      // The step's text already came as deltas: it was the model's thought, not the answer, so it
      // moves into the steps and the answer starts afresh (docs/api.md, the agent loop).
      return { ...answer, text: '', steps: [...answer.steps,
        { kind: 'thought', text: event.thought ?? '', turn: event.turn }] };
    case 'tool_execution': {
      // `tool_execution` comes before a call's `approval_required`; a step drawn from a waiting job's `pending`
      // (after a reload) already has it: the replayed event leaves it as it is. Only `tool_result` decides.
      const args = parseArgs(event.args);
      const steps = withCall(answer.steps, event.call_id,
        (step) => ({ ...step, args: event.args === undefined ? step.args : args }),
        { kind: 'tool', callId: event.call_id ?? null, name: event.tool_name, args, result: null, ok: null });
      return { ...answer, statusText: `Using ${event.tool_name}…`, steps };
    }
    case 'approval_required':
      return { ...answer, statusText: `${event.tool_name} waits for your decision…`,
        steps: withApproval(answer.steps, event) };
    case 'tool_result':
      return { ...answer, steps: withToolResult(answer.steps, event) };
    case 'steered':
      return { ...answer, statusText: 'Your message joined the answer…',
        steps: [...answer.steps, { kind: 'steered', text: String(event.message ?? '') }] };
    case 'response':
      return { ...answer, text: event.content ?? answer.text, structured: event.structured ?? undefined,
        intent: event.intent ?? null, usage: event.usage ?? null };
    case 'error':
      return { ...answer, phase: event.code === 'canceled' ? 'canceled' : 'error',
        error: { message: event.message ?? 'the turn failed', code: event.code ?? 'error' } };
    case 'done':
      return { ...answer, done: true, phase: answer.error ? answer.phase : 'done', statusText: '' };
    default:
      return answer; // An event type this page does not know yet: ignored, never fatal.
  }
}

/** Parsed JSON of an answer when the agent asks for a response shape and the text is JSON. */
export function structuredOf(text, agent) {
  if (!agent || agent.response_shape === null || agent.response_shape === undefined) return undefined;
  const trimmed = (text || '').trim();
  if (!trimmed.startsWith('{') && !trimmed.startsWith('[')) return undefined;
  try {
    return JSON.parse(trimmed);
  } catch {
    return undefined;
  }
}

/** A stored message's rating (`feedback` is `{rating, comment}`; a bare rating string is taken too), or null. */
export function ratingOf(feedback) {
  const rating = feedback && typeof feedback === 'object' ? feedback.rating : feedback;
  return rating === 'up' || rating === 'down' ? rating : null;
}

/**
 * Stored messages (oldest first) as entries: {kind: 'user', id, content, images, before} and
 * {kind: 'answer', id, answer, feedback}. An assistant message with tool_calls and the tool messages after
 * it become the steps of the next answer, as they were shown live. A user message that came while a turn
 * was under way (after its steps, or with the job of the turn's own message) was steered into it: a
 * `steered` step there. `before` is the id of the message before a user message (null for the first
 * one): where an edit of it forks the session.
 */
export function historyEntries(messages, agent) {
  const entries = [];
  let steps = [];
  let openJob = null; // the job of the user message still waiting for its answer
  let previousId = null;
  for (const message of messages) {
    if (message.role === 'user') {
      if (steps.length || (openJob && message.job_id === openJob)) {
        steps = [...steps, { kind: 'steered', text: message.content, id: message.id }];
      } else {
        entries.push({ kind: 'user', id: message.id, content: message.content, images: message.images || [],
          before: previousId, stored: true });
        openJob = message.job_id || null;
      }
    } else if (message.role === 'tool') {
      steps = withToolResult(steps, { call_id: message.tool_call_id, tool_name: message.name,
        preview: message.content, ok: !isDenial(false, message.content) });
    } else if (message.role === 'assistant' && Array.isArray(message.tool_calls) && message.tool_calls.length) {
      if (message.content) steps = [...steps, { kind: 'thought', text: message.content }];
      for (const call of message.tool_calls) {
        steps = [...steps, { kind: 'tool', callId: call.id, name: call.function?.name ?? '?',
          args: parseArgs(call.function?.arguments), result: null, ok: null }];
      }
    } else if (message.role === 'assistant') {
      const answer = { ...newAnswer(), steps, text: message.content, structured: structuredOf(message.content, agent),
        phase: 'done', statusText: '', done: true, jobId: message.job_id };
      entries.push({ kind: 'answer', id: message.id, answer, feedback: ratingOf(message.feedback), stored: true });
      steps = [];
      openJob = null;
    }
    previousId = message.id;
  }
  if (steps.length) {
    entries.push({ kind: 'answer', id: 'steps', answer: { ...newAnswer(), steps, phase: 'done', done: true } });
  }
  return entries;
}
