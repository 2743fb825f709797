// Inline SVG icons (no icon font, no emoji: both depend on the fonts a machine has).
import { html } from './html.js';

const icon = (path) => () => html`<svg class="icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"
  focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">
  ${path}</svg>`;

export const AttachIcon = icon(html`<path d="M21 12.5l-8.5 8.5a5 5 0 0 1-7-7L14 5.5a3.5 3.5 0 0 1 5 5L10.5 19a2 2 0 0 1-3-3L15 8.5" />`);
export const TrashIcon = icon(html`<path d="M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13M10 11v6M14 11v6" />`);
export const EditIcon = icon(html`<path d="M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4" />`);
export const MenuIcon = icon(html`<path d="M4 6h16M4 12h16M4 18h16" />`);
