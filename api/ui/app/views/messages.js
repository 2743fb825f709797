// How a message looks: the user's words, and an answer with its thinking, tool steps and text.
import { html, useEffect, useMemo, useRef } from '../html.js';
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

/** One tool call and its result, collapsed to a line until opened. */
export function ToolStep({ step }) {
  const state = step.result === null ? 'running' : step.ok ? 'ok' : 'failed';
  const label = { running: 'running', ok: 'done', failed: 'failed' }[state];
  return html`
    <details class=${`step step-tool step-${state}`} data-step="tool">
      <summary>
        <span class="step-icon" aria-hidden="true">${state === 'running' ? '⋯' : state === 'ok' ? '✓' : '✕'}</span>
        <span class="step-name">${step.name}</span>
        <code class="step-args">${argsSummary(step.args)}</code>
        <span class="visually-hidden">(${label})</span>
      </summary>
      <div class="step-body">
        <h4>Arguments</h4>
        <pre><code>${pretty(step.args ?? {})}</code></pre>
        <h4>${state === 'failed' ? 'Error' : 'Result'}</h4>
        <pre><code>${step.result === null ? 'Waiting for the tool…' : step.result}</code></pre>
      </div>
    </details>`;
}

function Steps({ steps }) {
  if (!steps.length) return null;
  return html`<div class="steps">
    ${steps.map((step, i) => (step.kind === 'thought'
      ? html`<p class="step step-thought" data-step="thought" key=${i}>${step.text}</p>`
      : html`<${ToolStep} step=${step} key=${step.callId || i} />`))}
  </div>`;
}

export function UserMessage({ content, images = [], imageCount = 0 }) {
  const missing = Math.max(imageCount - images.length, 0);
  return html`
    <article class="msg msg-user" aria-label="You said">
      ${images.length > 0 && html`<div class="msg-images">
        ${images.map((src, i) => html`<img src=${src} alt=${`Attached image ${i + 1}`} key=${i} />`)}
      </div>`}
      ${missing > 0 && html`<p class="muted">(${missing} attached image${missing > 1 ? 's' : ''})</p>`}
      <p class="msg-text">${content}</p>
    </article>`;
}

/** An answer, stored or live; `live` adds the running status line. */
export function Answer({ answer, live = false, agentName = 'Agent' }) {
  const busy = live && !answer.done;
  return html`
    <article class=${`msg msg-answer${busy ? ' is-live' : ''}`} aria-label=${`${agentName} said`}
      aria-busy=${busy ? 'true' : 'false'}>
      ${answer.thinking && html`<details class="thinking">
        <summary>Thinking</summary>
        <div class="thinking-text">${answer.thinking}</div>
      </details>`}
      <${Steps} steps=${answer.steps} />
      ${answer.structured !== undefined
        ? html`<${JsonBlock} value=${answer.structured} />`
        : answer.text && html`<${Markdown} text=${answer.text} />`}
      ${busy && html`<p class="status-line"><span class="spinner" aria-hidden="true"></span>${answer.statusText}</p>`}
    </article>`;
}
