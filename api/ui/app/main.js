// The app: the key, the URL (?agent=&session=), and which views show.
import { Api, KEY_STORAGE, apiPath, describeError, enc } from './api.js';
import { html, render, useEffect, useMemo, useState } from './html.js';
import { MenuIcon } from './icons.js';
import { pendingTurns } from './turn.js';
import { AgentForm, AgentList } from './views/agents.js';
import { ChatPane } from './views/chat.js';
import { McpPanel, McpServersDialog } from './views/mcp.js';
import { SchedulesDialog, SchedulesPanel } from './views/schedules.js';
import { SessionList, sessionTitle } from './views/sessions.js';
import { UsageDialog, UsagePanel } from './views/usage.js';
import { SignIn } from './views/signin.js';

function readRoute() {
  const params = new URLSearchParams(location.search);
  return { agent: params.get('agent'), session: params.get('session') };
}

function routeUrl({ agent, session }) {
  const params = new URLSearchParams();
  if (agent) params.set('agent', agent);
  if (session) params.set('session', session);
  const query = params.toString();
  return query ? `?${query}` : location.pathname;
}

function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

const NARROW = '(max-width: 760px)'; // the stylesheet's phone layout

function useNarrow() {
  const [narrow, setNarrow] = useState(() => matchMedia(NARROW).matches);
  useEffect(() => {
    const query = matchMedia(NARROW);
    const onChange = () => setNarrow(query.matches);
    query.addEventListener('change', onChange);
    return () => query.removeEventListener('change', onChange);
  }, []);
  return narrow;
}

function App() {
  const [apiKey, setApiKey] = useState(storedKey);
  const [notice, setNotice] = useState('');
  const [changingKey, setChangingKey] = useState(false);
  const [agents, setAgents] = useState(null);
  const [agentsError, setAgentsError] = useState(null);
  const [route, setRoute] = useState(readRoute);
  const [editing, setEditing] = useState(null);
  const [navOpen, setNavOpen] = useState(false);
  const [sessionsVersion, setSessionsVersion] = useState(0);
  const [managingMcp, setManagingMcp] = useState(false);
  const [mcpVersion, setMcpVersion] = useState(0);
  const [managingSchedules, setManagingSchedules] = useState(false);
  const [schedulesVersion, setSchedulesVersion] = useState(0);
  const [showingUsage, setShowingUsage] = useState(false);
  const [announcement, setAnnouncement] = useState('');
  const narrow = useNarrow();

  function signOut(message) {
    localStorage.removeItem(KEY_STORAGE);
    pendingTurns.forgetAll();
    setApiKey(null);
    setAgents(null);
    setNotice(message);
  }

  const api = useMemo(() => apiKey
    && new Api(apiKey, () => signOut('Parley refused the saved API key. Enter it again.')), [apiKey]);

  function navigate(next, { replace = false } = {}) {
    const url = routeUrl(next);
    if (replace) history.replaceState(null, '', url); else history.pushState(null, '', url);
    setRoute(next);
    setNavOpen(false);
  }

  useEffect(() => {
    const onPop = () => setRoute(readRoute());
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);

  async function loadAgents() {
    setAgentsError(null);
    try {
      setAgents(await api.get(apiPath('agents')));
    } catch (error) {
      if (error.status !== 401) setAgentsError(error);
    }
  }

  useEffect(() => { if (api && agents === null) loadAgents(); }, [api]);

  // A link that names only a session: find its agent.
  useEffect(() => {
    if (!api || !agents || route.agent || !route.session) return;
    api.get(`/api/v1/sessions/${enc(route.session)}`)
      .then((session) => navigate({ agent: session.agent_id, session: session.session_id }, { replace: true }))
      .catch((error) => setAgentsError(error));
  }, [api, agents, route.agent, route.session]);

  const agent = agents && (agents.find((a) => a.id === route.agent) || agents.find((a) => a.name === route.agent));
  useEffect(() => {
    if (agents && agents.length && !route.agent && !route.session) navigate({ agent: agents[0].id }, { replace: true });
  }, [agents, route.agent, route.session]);
  useEffect(() => { document.title = agent ? `${agent.name} · Parley` : 'Parley'; }, [agent]);
  // On a phone the open drawer is the only thing to use: focus goes into it, the rest is inert.
  useEffect(() => { if (navOpen && narrow) document.querySelector('#sidebar a, #sidebar button')?.focus(); }, [navOpen]);

  if (!apiKey || changingKey) {
    return html`<${SignIn} notice=${notice} onCancel=${changingKey ? () => setChangingKey(false) : null}
      onSignedIn=${(key, list) => {
        localStorage.setItem(KEY_STORAGE, key);
        setNotice('');
        setChangingKey(false);
        setAgents(list);
        setApiKey(key);
      }} />`;
  }

  function saved(savedAgent) {
    const isNew = !agents.some((a) => a.id === savedAgent.id);
    setEditing(null);
    setAgents((list) => (isNew ? [...list, savedAgent] : list.map((a) => (a.id === savedAgent.id ? savedAgent : a))));
    if (isNew) navigate({ agent: savedAgent.id });
    setAnnouncement(`Agent ${savedAgent.name} saved.`);
  }

  function deleted(gone) {
    setEditing(null);
    setAgents((list) => list.filter((a) => a.id !== gone.id));
    if (agent && gone.id === agent.id) navigate({ agent: null, session: null }, { replace: true });
    setAnnouncement(`Agent ${gone.name} deleted.`);
  }

  let content;
  if (agentsError) {
    content = html`<div class="empty problem" role="alert"><p>${agentsError.status === 404
      ? 'This conversation does not exist (it may have been deleted).' : describeError(agentsError)}</p>
      <button class="button" onClick=${() => { navigate({ agent: null, session: null }); loadAgents(); }}>Start over</button></div>`;
  } else if (agents === null) {
    content = html`<p class="empty muted">Loading…</p>`;
  } else if (!agents.length) {
    content = html`<div class="empty"><p>There is no agent yet.</p>
      <button class="button primary" onClick=${() => setEditing({ agent: null })}>Create an agent</button></div>`;
  } else if (!agent) {
    content = route.agent
      ? html`<div class="empty" role="alert"><p>The agent in this link does not exist (or was deleted).</p>
          <button class="button" onClick=${() => navigate({ agent: agents[0].id })}>Open ${agents[0].name}</button></div>`
      : html`<p class="empty muted">Loading…</p>`;
  } else {
    content = html`<${ChatPane} key=${`${agent.id}/${route.session || ''}`} api=${api} apiKey=${apiKey} agent=${agent}
      sessionId=${route.session} onAnnounce=${setAnnouncement}
      onTurnEnded=${() => setSessionsVersion((v) => v + 1)}
      onSessionStarted=${(session) => { setSessionsVersion((v) => v + 1); navigate({ agent: agent.id, session: session.session_id }); }} />`;
  }

  return html`
    <a class="skip-link" href="#message-input">Skip to the message box</a>
    <header class="topbar">
      <button class="icon-button nav-toggle" aria-expanded=${navOpen ? 'true' : 'false'} aria-controls="sidebar"
        onClick=${() => setNavOpen(!navOpen)}>
        <${MenuIcon} /><span class="visually-hidden">Agents and conversations</span>
      </button>
      <h1 class="brand"><img src="/ui/icon.svg" alt="" width="24" height="24" /> Parley</h1>
      <div class="key-menu">
        <button class="button small subtle" onClick=${() => setChangingKey(true)}>Change key</button>
        <button class="button small subtle" onClick=${() => signOut('The key was forgotten by this browser.')}>Forget key</button>
      </div>
    </header>
    <div class="layout">
      <nav id="sidebar" class=${`sidebar${navOpen ? ' open' : ''}`} aria-label="Agents and conversations"
        onKeyDown=${(e) => { if (e.key === 'Escape') setNavOpen(false); }}>
        ${agents && html`<${AgentList} agents=${agents} currentId=${agent?.id}
          onOpen=${(id) => navigate({ agent: id })} onNew=${() => setEditing({ agent: null })}
          onEdit=${(a) => setEditing({ agent: a })} />`}
        ${agent && html`<${SessionList} api=${api} agent=${agent} currentId=${route.session} refresh=${sessionsVersion}
          onOpen=${(id) => navigate({ agent: agent.id, session: id })}
          onNew=${() => navigate({ agent: agent.id })}
          onDeleted=${(session) => {
            setAnnouncement(`Deleted ${sessionTitle(session)}.`);
            if (session.session_id === route.session) navigate({ agent: agent.id }, { replace: true });
          }} />`}
        ${agents && html`<${McpPanel} api=${api} refresh=${mcpVersion} onManage=${() => setManagingMcp(true)} />`}
        ${agents && html`<${SchedulesPanel} api=${api} refresh=${schedulesVersion} onManage=${() => setManagingSchedules(true)} />`}
        ${agents && html`<${UsagePanel} api=${api} refresh=${sessionsVersion} onShow=${() => setShowingUsage(true)} />`}
      </nav>
      <main id="main" class="main" inert=${navOpen && narrow}>${content}</main>
    </div>
    <div class="visually-hidden" role="status" aria-live="polite">${announcement}</div>
    ${editing && html`<${AgentForm} api=${api} agent=${editing.agent} onSaved=${saved} onDeleted=${deleted}
      onClose=${() => setEditing(null)} />`}
    ${managingMcp && html`<${McpServersDialog} api=${api} onChanged=${() => setMcpVersion((v) => v + 1)}
      onAnnounce=${setAnnouncement} onClose=${() => setManagingMcp(false)} />`}
    ${managingSchedules && html`<${SchedulesDialog} api=${api} agents=${agents || []} agent=${agent}
      onChanged=${() => setSchedulesVersion((v) => v + 1)} onAnnounce=${setAnnouncement}
      onClose=${() => setManagingSchedules(false)} />`}
    ${showingUsage && html`<${UsageDialog} api=${api} onClose=${() => setShowingUsage(false)} />`}`;
}

render(html`<${App} />`, document.getElementById('app'));
