// Building DOM nodes without markup strings, so nothing from the server becomes HTML and
// no inline style attribute is ever written (the page runs under a strict CSP).

export const $ = (id) => document.getElementById(id);

/** Create an element: attrs are attributes (on* are listeners), children nodes or text. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c != null && c !== false));
  return node;
}

/** A colour swatch; its colour is set through the CSSOM, which a CSP allows. */
export function swatch(color) {
  const node = h("span", { class: "swatch", "aria-hidden": "true" });
  node.style.backgroundColor = color;
  return node;
}

/** Set text only when it changed, so screen readers and selections are left alone. */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Keep a keyed list's children in step with `items`: `create` makes a node once,
 * `update` changes it in place (so a focused button inside it keeps its focus).
 */
export function syncKeyed(container, items, key, create, update) {
  const existing = new Map([...container.children].map((node) => [node.dataset.key, node]));
  const wanted = items.map((item) => {
    const k = String(key(item));
    let node = existing.get(k);
    if (!node) {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item);
    return node;
  });
  const current = [...container.children];
  for (const node of current) if (!wanted.includes(node)) node.remove();
  wanted.forEach((node, i) => {
    if (container.children[i] !== node) container.insertBefore(node, container.children[i] ?? null);
  });
}

/** A number input's value: undefined when blank, NaN when the browser could not parse it. */
export function numberValue(input) {
  if (input.validity.badInput) return Number.NaN;
  return input.value.trim() === "" ? undefined : Number(input.value);
}

/** Tell the page that a call failed: the connection logic decides what that means. */
export function reportFailure(err) {
  document.dispatchEvent(new CustomEvent("simsvc:failure", { detail: err }));
}
