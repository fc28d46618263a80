/* Numbers as the pages show them (pure: no DOM, importable anywhere). */

export const MiB = 1024 * 1024;

export const hex = (v) => "0x" + Number(v).toString(16);

/** MiB with one decimal, whole GiB as GiB (the live page's sizes). */
export function mib(v) {
  const m = v / MiB;
  return (m >= 1024 && m % 1024 === 0) ? (m / 1024) + " GiB" : (Math.round(m * 10) / 10) + " MiB";
}

/** The largest binary unit that fits (the replay's sizes). */
export function sizeText(n) {
  const units = [[2 ** 40, "TiB"], [2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]];
  for (const [u, name] of units) {
    if (n >= u) { const v = n / u; return (Number.isInteger(v) ? v : v.toFixed(1)) + " " + name; }
  }
  return n + " B";
}

/** Bytes from base64 (the view's block codes). */
export function b64(s) {
  const bin = atob(s); const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
