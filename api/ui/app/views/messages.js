// How a message looks: the user's words, and an answer with its thinking, tool steps and text.
import { isDenial } from '../events.js';
import { html, useEffect, useMemo, useRef, useState } from '../html.js';
import { highlightWithin, renderMarkdown } from '../markdown.js';

export function Markdown({ text }) {
  const ref = useRef(null);
  const safe = useMemo(() => renderMarkdown(text), [text]);
  useEffect(() => { highlightWithin(ref.current); }, [safe]);
  return html`<div class="markdown" ref=${ref} dangerouslySetInnerHTML=${{ __html: safe }}></div>`;
}

/** A structured answer: formatted, highlighted JSON. */
function JsonBlock({ value }) {
  const ref = useRef(null);
  const text = pretty(value);
  useEffect(() => { highlightWithin(ref.current); }, [text]);
  return html`<pre class="structured" aria-label="Structured answer" ref=${ref}><code class="language-json" key=${text}>${text}</code></pre>`;
}

function pretty(value) {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function argsSummary(args) {
  if (args === null || args === undefined) return '';
  const text = typeof args === 'string' ? args : JSON.stringify(args);
  return text.length > 60 ? `${text.slice(0, 57)}…` : text;
}

function stepState(step) {
  if (step.result === null) return step.approval === 'pending' ? 'waiting' : 'running';
  if (step.approval === 'denied' || isDenial(step.ok, step.result)) return 'denied';
  return step.ok ? 'ok' : 'failed';
}

const STEP_LABELS = { waiting: 'waits for a decision', running: 'running', ok: 'done', failed: 'failed', denied: 'denied' };
const STEP_ICONS = { waiting: '?', running: '⋯', ok: '✓', failed: '✕', denied: '⊘' };

/** One tool call and its result, collapsed to a line until opened. */
export function ToolStep({ step }) {
  const state = stepState(step);
  return html`
    <details class=${`step step-tool step-${state}`} data-step="tool">
      <summary>
        <span class="step-icon" aria-hidden="true">${STEP_ICONS[state]}</span>
        <span class="step-name">${step.name}</span>
        <code class="step-args">${argsSummary(step.args)}</code>
        <span class=${state === 'denied' ? 'step-label' : 'visually-hidden'}>(${STEP_LABELS[state]})</span>
      </summary>
      <div class="step-body">
        <h4>Arguments</h4>
        <pre><code>${pretty(step.args ?? {})}</code></pre>
        <h4>${state === 'failed' ? 'Error' : state === 'denied' ? 'Denied' : 'Result'}</h4>
        <pre><code>${step.result === null ? 'Waiting for the tool…' : step.result}</code></pre>
      </div>
    </details>`;
}

function decisionWords(decision) {
  if (!decision) return '';
  if (decision.state === 'sending') return decision.approve ? 'Approving…' : 'Denying…';
  if (decision.state === 'sent') {
    return decision.note || (decision.approve ? 'Approved: the tool runs next.' : 'Denied: the agent is told so.');
  }
  return decision.note || '';
}

/**
 * A tool call that waits for a person: the tool, its arguments in full, an optional reason, Approve and Deny.
 * `onDecide(callId, approve, reason)` posts the decision; the card stays until the stream brings the call's result.
 */
export function ApprovalCard({ step, onDecide }) {
  const [reason, setReason] = useState('');
  const decision = step.decision;
  const busy = decision && (decision.state === 'sending' || decision.state === 'sent');
  const reasonId = `approval-reason-${step.callId}`;
  return html`
    <section class="approval" data-step="approval" data-call=${step.callId}
      aria-label=${`Approval needed: ${step.name}`}>
      <p class="approval-title"><span class="step-icon" aria-hidden="true">?</span>
        <span><strong class="step-name">${step.name}</strong> wants to run with these arguments:</span></p>
      <pre class="approval-args"><code>${pretty(step.args ?? {})}</code></pre>
      ${onDecide && html`<label for=${reasonId} class="approval-reason-label">Reason <span class="muted">(optional,
        told to the agent when you deny)</span></label>
      <input id=${reasonId} class="approval-reason" value=${reason} maxlength="2000" disabled=${busy}
        onInput=${(e) => setReason(e.currentTarget.value)} />
      <div class="actions">
        <button type="button" class="button primary" disabled=${busy}
          onClick=${() => onDecide(step.callId, true, reason.trim())}>Approve</button>
        <button type="button" class="button danger" disabled=${busy}
          onClick=${() => onDecide(step.callId, false, reason.trim())}>Deny</button>
      </div>`}
      ${decision && html`<p class=${decision.state === 'error' ? 'field-error' : 'hint'} role="status">
        ${decisionWords(decision)}</p>`}
    </section>`;
}

function Steps({ steps, onDecide }) {
  if (!steps.length) return null;
  return html`<div class="steps">
    ${steps.map((step, i) => {
      if (step.kind === 'thought') return html`<p class="step step-thought" data-step="thought" key=${i}>${step.text}</p>`;
      if (step.kind === 'steered') {
        return html`<div class="step step-steered" data-step="steered" key=${i}>
          <span class="step-steered-label">You added</span><p class="msg-text">${step.text}</p></div>`;
      }
      if (step.approval === 'pending' && step.result === null) {
        return html`<${ApprovalCard} step=${step} onDecide=${onDecide} key=${step.callId || i} />`;
      }
      return html`<${ToolStep} step=${step} key=${step.callId || i} />`;
    })}
  </div>`;
}

export function UserMessage({ content, images = [], imageCount = 0, actions = null }) {
  const missing = Math.max(imageCount - images.length, 0);
  return html`
    <article class="msg msg-user" aria-label="You said">
      ${images.length > 0 && html`<div class="msg-images">
        ${images.map((src, i) => html`<img src=${src} alt=${`Attached image ${i + 1}`} key=${i} />`)}
      </div>`}
      ${missing > 0 && html`<p class="muted">(${missing} attached image${missing > 1 ? 's' : ''})</p>`}
      <p class="msg-text">${content}</p>
      ${actions}
    </article>`;
}

/** An answer, stored or live; `live` adds the running status line, `onDecide` the approval buttons. */
export function Answer({ answer, live = false, agentName = 'Agent', onDecide = null, actions = null }) {
  const busy = live && !answer.done;
  return html`
    <article class=${`msg msg-answer${busy ? ' is-live' : ''}`} aria-label=${`${agentName} said`}
      aria-busy=${busy ? 'true' : 'false'}>
      ${answer.thinking && html`<details class="thinking">
        <summary>Thinking</summary>
        <div class="thinking-text">${answer.thinking}</div>
      </details>`}
      <${Steps} steps=${answer.steps} onDecide=${onDecide} />
      ${answer.structured !== undefined
        ? html`<${JsonBlock} value=${answer.structured} />`
        : answer.text && html`<${Markdown} text=${answer.text} />`}
      ${busy && html`<p class="status-line"><span class="spinner" aria-hidden="true"></span>${answer.statusText}</p>`}
      ${actions}
    </article>`;
}
