// Stable colours: one hue per thread name (the same in every view and every
// page load), lightness varied a little per function so neighbours differ.

function hash32(s) {
  let h = 0x811c9dc5; // FNV-1a, then a murmur3 finaliser to spread similar names
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Hue in degrees, from the thread name. Threads of one pool ("pricing_0",
 * "ThreadPoolExecutor-0_3") share a base hue from the name without its
 * trailing number, and the number shifts it a little: a family of colours.
 * Skips 270..330 (purple/magenta), kept for search highlights.
 */
export function threadHue(name) {
  const m = /^(.*?)(\d+)$/.exec(String(name));
  const base = (hash32(m ? m[1] : String(name)) / 4294967296) * 300;
  const shift = m ? ((Number(m[2]) * 37) % 90) - 45 : 0;
  const h = (((base + shift) % 300) + 300) % 300;
  return Math.round((330 + h) % 360);
}

export function threadColor(name) {
  return `hsl(${threadHue(name)}, 60%, 63%)`;
}

export function frameColor(thread, frameName) {
  const light = 70 + (hash32(String(frameName)) % 15);
  return `hsl(${threadHue(thread)}, 58%, ${light}%)`;
}

export const ROOT_COLOR = "#cfd5dd";
export const HIGHLIGHT_COLOR = "#e600e6";
