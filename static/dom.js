/* DOM helpers shared by every page: elements built from data, never from markup. */

export const $ = (id) => document.getElementById(id);

/* A DOM element from data: attributes and properties set one by one, text as text nodes.
 * Nothing a server or a file sends ever goes through an HTML parser. */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "class") node.className = v;
    else if (k in node) node[k] = v; // a property: never parsed as markup
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
