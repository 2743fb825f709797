// Inline SVG icons (no icon font, no emoji: both depend on the fonts a machine has).
import { html } from './html.js';

const icon = (path) => () => html`<svg class="icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"
  focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">
  ${path}</svg>`;

export const AttachIcon = icon(html`<path d="M21 12.5l-8.5 8.5a5 5 0 0 1-7-7L14 5.5a3.5 3.5 0 0 1 5 5L10.5 19a2 2 0 0 1-3-3L15 8.5" />`);
export const TrashIcon = icon(html`<path d="M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13M10 11v6M14 11v6" />`);
export const EditIcon = icon(html`<path d="M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4" />`);
export const MenuIcon = icon(html`<path d="M4 6h16M4 12h16M4 18h16" />`);
export const ThumbUpIcon = icon(html`<path d="M7 11v9H4v-9h3zM7 11l4-8a2 2 0 0 1 3 2l-1 5h6a2 2 0 0 1 2 2.3l-1.4 7A2 2 0 0 1 17.6 21H7" />`);
export const ThumbDownIcon = icon(html`<path d="M17 13V4h3v9h-3zM17 13l-4 8a2 2 0 0 1-3-2l1-5H5a2 2 0 0 1-2-2.3l1.4-7A2 2 0 0 1 6.4 3H17" />`);
export const ForkIcon = icon(html`<circle cx="6" cy="5" r="2" /><circle cx="6" cy="19" r="2" /><circle cx="18" cy="6" r="2" />
  <path d="M6 7v10M18 8v1a6 6 0 0 1-6 6H8" />`);
export const RegenerateIcon = icon(html`<path d="M20 11a8 8 0 0 0-14.6-4.5M4 4v4h4M4 13a8 8 0 0 0 14.6 4.5M20 20v-4h-4" />`);
