// Asking for the API key: checked against the API before it is kept.
import { Api, apiPath, describeError } from '../api.js';
import { html, useEffect, useRef, useState } from '../html.js';

export function SignIn({ notice, onSignedIn, onCancel }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState('');
  const [checking, setChecking] = useState(false);
  const inputRef = useRef(null);
  useEffect(() => inputRef.current?.focus(), []);

  async function submit(event) {
    event.preventDefault();
    const candidate = key.trim();
    if (!candidate) {
      setError('Enter the API key.');
      return;
    }
    setChecking(true);
    setError('');
    try {
      const agents = await new Api(candidate).get(apiPath('agents'));
      onSignedIn(candidate, agents);
    } catch (failure) {
      setError(failure.status === 401 ? 'Parley refused this key. Check it and try again.' : describeError(failure));
      setChecking(false);
      inputRef.current?.focus();
    }
  }

  return html`
    <main class="signin" id="main">
      <form class="card" onSubmit=${submit} aria-labelledby="signin-title" novalidate>
        <h1 id="signin-title"><img src="/ui/icon.svg" alt="" width="28" height="28" /> Parley</h1>
        ${notice && html`<p class="notice" role="alert">${notice}</p>`}
        <label for="api-key">API key</label>
        <input id="api-key" ref=${inputRef} type="password" autocomplete="current-password" spellcheck="false"
          value=${key} onInput=${(e) => setKey(e.currentTarget.value)}
          aria-invalid=${error ? 'true' : 'false'} aria-describedby="api-key-help api-key-error" />
        <p id="api-key-error" class="field-error" role=${error ? 'alert' : undefined}>${error}</p>
        <p id="api-key-help" class="hint">
          The key <code>make run</code> printed (also in <code>.parley-data/api_key</code>), or one of${' '}
          <code>PARLEY_API_KEYS</code>. It stays in this browser only.
        </p>
        <div class="actions">
          <button type="submit" class="button primary" disabled=${checking}>${checking ? 'Checking…' : 'Sign in'}</button>
          ${onCancel && html`<button type="button" class="button subtle" onClick=${onCancel}>Cancel</button>`}
        </div>
      </form>
    </main>`;
}
