// What the test page (page.js) and the probe of choir's own page (probe.js) measure with, the
// same way in both: the page's RTCPeerConnections and the header extensions in their SDP, how
// long a remote track has been heard or silent, and the rounding of the numbers they report.
import { HEARD_RMS } from './audio.js';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const round = (x, d = 1) => (x === null || x === undefined ? null : Number(x.toFixed(d)));
export const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

/** Records every RTCPeerConnection the page makes from now on; returns the (growing) list. */
export function recordPeerConnections() {
  const peerConnections = [];
  window.RTCPeerConnection = class extends window.RTCPeerConnection {
    constructor(...args) {
      super(...args);
      peerConnections.push(this);
    }
  };
  return peerConnections;
}

/** The m-section `mid` of `sdp` ('' if none). */
function sectionOf(sdp, mid) {
  return (sdp ?? '').split(/\r\n(?=m=)/).find((m) => m.split('\r\n').includes(`a=mid:${mid}`)) ?? '';
}

/** The codec lines (m=, a=rtpmap, a=fmtp, a=rtcp-fb) of the m-section `mid` in `sdp`. */
export function codecLinesOf(sdp, mid) {
  return sectionOf(sdp, mid)
    .split('\r\n')
    .filter((l) => /^(m=|a=rtpmap:|a=fmtp:|a=rtcp-fb:)/.test(l));
}

/** The header extensions ({uri, id}) of the m-section `mid` in `sdp`. */
export function extmapsOf(sdp, mid) {
  const section = sectionOf(sdp, mid);
  return [...section.matchAll(/^a=extmap:(\d+)(?:\/\w+)? (\S+)/gm)].map((m) => ({ uri: m[2], id: Number(m[1]) }));
}

/**
 * Waits until the analyser `analyserOf()` finds (polled every 5 ms) is heard (`heard` true) or
 * silent (false) for `holdMs` in a row; resolves to the ms from this call to the moment that
 * began, or to null after `timeoutMs`.
 */
export async function levelHeld(analyserOf, heard, { timeoutMs = 5000, holdMs = 100 } = {}) {
  const start = performance.now();
  let since = null;
  while (performance.now() - start < timeoutMs) {
    const analyser = analyserOf();
    const now = performance.now();
    if (analyser && (analyser.rms() >= HEARD_RMS) === heard) {
      since ??= now;
      if (now - since >= holdMs) return round(since - start);
    } else {
      since = null;
    }
    await sleep(5);
  }
  return null;
}
