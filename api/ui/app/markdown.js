// Markdown to safe HTML: marked parses, raw HTML in the text is shown as text (never as markup),
// and DOMPurify sanitises the result as a second, independent defence. Code blocks are
// highlighted by highlight.js, loaded on the first code block only.
import { Marked } from 'marked';
import DOMPurify from 'dompurify';

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({ gfm: true, breaks: true, async: false });
marked.use({
  renderer: {
    // HTML written by a model or a user is text to read, not markup to run.
    html({ text }) {
      return escapeHtml(text);
    },
    // The page's CSP shows images from this origin and data: URIs only; any other image becomes a
    // link, so an answer cannot make the browser fetch (and report to) a third party on its own.
    image({ href, text }) {
      if (/^data:image\/(png|jpeg|gif|webp);/i.test(href || '')) return `<img src="${escapeHtml(href)}" alt="${escapeHtml(text)}">`;
      return `<a href="${escapeHtml(href || '')}">${escapeHtml(text || href || 'image')}</a>`;
    },
  },
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'option'],
  FORBID_ATTR: ['style'],
};

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.getAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

/** Safe HTML for `text`: a string for `dangerouslySetInnerHTML`. */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text || ''), PURIFY);
}

const LANGUAGES = ['bash', 'c', 'cpp', 'css', 'diff', 'go', 'java', 'javascript', 'json', 'markdown', 'plaintext',
  'python', 'rust', 'shell', 'sql', 'typescript', 'xml', 'yaml'];
let highlighter = null;

function loadHighlighter() {
  highlighter ??= (async () => {
    const hljs = (await import('highlight.js/core.min.js')).default;
    const grammars = await Promise.all(LANGUAGES.map((name) => import(`highlight.js/languages/${name}.min.js`)));
    grammars.forEach((module, i) => hljs.registerLanguage(LANGUAGES[i], module.default));
    hljs.configure({ ignoreUnescapedHTML: true });
    return hljs;
  })();
  return highlighter;
}

/** Highlights the code blocks under `element` whose language is known (others stay plain). */
export async function highlightWithin(element) {
  const blocks = element ? [...element.querySelectorAll('pre > code:not([data-highlighted])')] : [];
  if (!blocks.length) return;
  const hljs = await loadHighlighter();
  for (const block of blocks) {
    const language = (block.className.match(/language-([\w+#.-]+)/) || [])[1];
    if (language && hljs.getLanguage(language) && block.isConnected) hljs.highlightElement(block);
  }
}
