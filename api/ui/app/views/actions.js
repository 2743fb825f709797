// What a person can do with a stored message: rate an answer, answer again, edit a message, fork the
// conversation at a message. The requests themselves are made by views/chat.js; these only draw the controls.
import { html, useEffect, useRef, useState } from '../html.js';
import { EditIcon, ForkIcon, RegenerateIcon, ThumbDownIcon, ThumbUpIcon } from '../icons.js';

function ActionButton({ label, icon, onClick, disabled, pressed }) {
  return html`<button type="button" class="icon-button msg-action" aria-label=${label} title=${label}
    aria-pressed=${pressed === undefined ? undefined : String(pressed)} disabled=${disabled} onClick=${onClick}>
    <${icon} /></button>`;
}

/**
 * An answer's controls: thumbs up and down (`rating` is 'up', 'down' or null; pressing the one that is on
 * clears it), Regenerate (on the last answer only: `onRegenerate` given) and Fork here.
 */
export function AnswerActions({ rating, onRate, onRegenerate, onFork, disabled }) {
  return html`<div class="msg-actions" role="group" aria-label="Answer actions">
    <${ActionButton} label="Good answer" icon=${ThumbUpIcon} pressed=${rating === 'up'} disabled=${disabled}
      onClick=${() => onRate(rating === 'up' ? null : 'up')} />
    <${ActionButton} label="Bad answer" icon=${ThumbDownIcon} pressed=${rating === 'down'} disabled=${disabled}
      onClick=${() => onRate(rating === 'down' ? null : 'down')} />
    ${onRegenerate && html`<${ActionButton} label="Regenerate" icon=${RegenerateIcon} disabled=${disabled}
      onClick=${onRegenerate} />`}
    <${ActionButton} label="Fork here" icon=${ForkIcon} disabled=${disabled} onClick=${onFork} />
  </div>`;
}

/** A user message's controls: Edit (a new branch with the edited text; `onEdit` null: not offered) and Fork here. */
export function UserActions({ onEdit, onFork, disabled }) {
  return html`<div class="msg-actions" role="group" aria-label="Message actions">
    ${onEdit && html`<${ActionButton} label="Edit" icon=${EditIcon} disabled=${disabled} onClick=${onEdit} />`}
    <${ActionButton} label="Fork here" icon=${ForkIcon} disabled=${disabled} onClick=${onFork} />
  </div>`;
}

/**
 * A user message being edited: the text in a box, *Send edited* (Enter) and *Cancel* (Escape). The edit is
 * sent in a new conversation that forks this one before the message; this one stays as it was.
 */
export function EditMessage({ content, saving, error, onSubmit, onCancel }) {
  const [text, setText] = useState(content);
  const ref = useRef(null);
  useEffect(() => { ref.current?.focus(); ref.current?.select(); }, []);

  function submit(event) {
    event.preventDefault();
    if (!saving && text.trim()) onSubmit(text);
  }

  function onKeyDown(event) {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) submit(event);
    else if (event.key === 'Escape') { event.preventDefault(); onCancel(); }
  }

  return html`<form class="msg msg-user msg-edit" onSubmit=${submit} aria-label="Edit your message">
    <label for="edit-message-input" class="visually-hidden">Edited message</label>
    <textarea id="edit-message-input" ref=${ref} rows="2" value=${text} aria-describedby="edit-message-hint edit-message-error"
      onInput=${(e) => setText(e.currentTarget.value)} onKeyDown=${onKeyDown}></textarea>
    <p id="edit-message-hint" class="hint">Sent in a new conversation that branches off here; this one stays as it is.</p>
    <p id="edit-message-error" class="field-error" role="alert">${error || ''}</p>
    <div class="actions">
      <button type="submit" class="button primary small" disabled=${saving || !text.trim()}>
        ${saving ? 'Sending…' : 'Send edited'}</button>
      <button type="button" class="button subtle small" onClick=${onCancel}>Cancel</button>
    </div>
  </form>`;
}
