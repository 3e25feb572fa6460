// The SDP of choir's side, for choir's own browser client (./choir-client.js).
//
// choir's transports are ICE-lite, DTLS and SRTP endpoints described by the voice API's
// TransportOptions (ICE ufrag/password, host candidates, DTLS fingerprint); the SDP of choir's
// side is written here from them and from the ORTC parameters of produce/consume:
//
//   send transport: the browser offers one sendonly audio m-line; this module answers for choir
//     (a=ice-lite, a=setup:passive: choir is the DTLS server) with the browser's own Opus
//     payload type and the header extensions choir's router knows; `produce` then tells choir
//     the browser's SSRC, payload type and extension ids.
//   recv transport: this module offers for choir, one sendonly m-line per consumer (mid, SSRC,
//     payload type and extension ids from `consume`'s reply); the browser answers (its
//     a=setup:active makes it the DTLS client). A consumer that goes away keeps its m-line,
//     inactive: m-lines are never reused, as choir never reuses a mid on a transport.

export const OPUS = { mimeType: 'audio/opus', clockRate: 48000, channels: 2 };

/** The m-section lines of `sdp` (index 0 = the session part). */
function sections(sdp) {
  const out = [[]];
  for (const line of sdp.split(/\r?\n/)) {
    if (!line) continue;
    if (line.startsWith('m=')) out.push([]);
    out[out.length - 1].push(line);
  }
  return out;
}

function attr(lines, name) {
  const prefix = `a=${name}:`;
  const line = lines.find((l) => l.startsWith(prefix));
  return line === undefined ? undefined : line.slice(prefix.length);
}

/** `minptime=10;useinbandfec=1` -> {minptime: 10, useinbandfec: 1} (numbers stay numbers). */
function parseFmtp(text) {
  const params = {};
  for (const part of (text ?? '').split(';')) {
    const [k, v] = part.split('=').map((s) => s?.trim());
    if (!k) continue;
    params[k] = v !== undefined && /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : (v ?? '');
  }
  return params;
}

function fmtp(params) {
  return Object.entries(params ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(';');
}

/** What choir needs from a browser's sendonly audio offer (its first m-section). */
export function parseLocalAudio(sdp) {
  const [session, media] = sections(sdp);
  if (!media) throw new Error('the browser offered no audio m-line');
  const lines = [...session, ...media];
  const rtpmap = media.map((l) => l.match(/^a=rtpmap:(\d+) opus\/48000\/2$/i)).find(Boolean);
  if (!rtpmap) throw new Error('the browser offered no Opus 48000/2');
  const pt = Number(rtpmap[1]);
  const fingerprint = attr(media, 'fingerprint') ?? attr(session, 'fingerprint');
  if (!fingerprint) throw new Error('the browser offered no DTLS fingerprint');
  const [algorithm, value] = fingerprint.split(' ');
  const extensions = [];
  for (const l of media) {
    const m = l.match(/^a=extmap:(\d+)(?:\/(\w+))? (\S+)/);
    if (m) extensions.push({ id: Number(m[1]), direction: m[2] ?? 'sendrecv', uri: m[3] });
  }
  const ssrcLine = media.map((l) => l.match(/^a=ssrc:(\d+) cname:(.+)$/)).find(Boolean);
  // RED (RFC 2198) over this Opus, if offered (Chromium: `a=fmtp:63 111/111`).
  const redPt = media
    .map((l) => l.match(/^a=rtpmap:(\d+) red\/48000\/2$/i))
    .filter(Boolean)
    .map((m) => Number(m[1]))
    .find((p) => media.includes(`a=fmtp:${p} ${pt}/${pt}`));
  return {
    mid: attr(media, 'mid'),
    pt,
    redPt,
    fmtp: parseFmtp(media.find((l) => l.startsWith(`a=fmtp:${pt} `))?.slice(`a=fmtp:${pt} `.length)),
    extensions,
    ssrc: ssrcLine ? Number(ssrcLine[1]) : undefined,
    cname: ssrcLine?.[2],
    rtcpRsize: media.includes('a=rtcp-rsize'),
    fingerprint: { algorithm, value },
    setup: attr(media, 'setup') ?? attr(lines, 'setup'),
  };
}

/** The DTLS fingerprint and a=setup of a browser's local description. */
export function localDtls(sdp) {
  const [session, media = []] = sections(sdp);
  const fingerprint = attr(media, 'fingerprint') ?? attr(session, 'fingerprint');
  const [algorithm, value] = fingerprint.split(' ');
  return { fingerprint: { algorithm, value }, setup: attr(media, 'setup') ?? attr(session, 'setup') };
}

/** choir's transport: the session-level and per-m-line lines common to both directions. */
function transportLines(options) {
  const ice = options.iceParameters;
  const candidates = options.iceCandidates.map((c) => {
    const tcp = c.protocol === 'tcp' ? ` tcptype ${c.tcpType ?? 'passive'}` : '';
    return `a=candidate:${c.foundation} 1 ${c.protocol} ${c.priority} ${c.address ?? c.ip} ${c.port} typ ${c.type ?? 'host'}${tcp}`;
  });
  // mediasoup-client uses the last fingerprint choir lists; so do we.
  const fp = options.dtlsParameters.fingerprints.at(-1);
  return {
    session: [...(ice.iceLite ? ['a=ice-lite'] : []), `a=fingerprint:${fp.algorithm} ${fp.value}`],
    media: [
      'c=IN IP4 0.0.0.0',
      `a=ice-ufrag:${ice.usernameFragment}`,
      `a=ice-pwd:${ice.password}`,
      ...candidates,
      'a=end-of-candidates',
      'a=rtcp-mux',
    ],
  };
}

function sdp(lines) {
  return `${lines.join('\r\n')}\r\n`;
}

/** Whether a codec's rtcpFeedback has generic NACK (RFC 4585). */
export function hasNack(codec) {
  return (codec?.rtcpFeedback ?? []).some((f) => f.type === 'nack' && !f.parameter);
}

/**
 * The answer of choir's send transport to the browser's offer. `router` is the router's Opus
 * codec: its parameters (in-band FEC, DTX) go into the answer, which the browser's encoder
 * reads, and its NACK turns on the browser's retransmissions of what choir asks for. Where the
 * browser offered RED over its Opus, the answer puts RED first: the browser then sends each
 * frame again in the next packet, and choir recovers from it what the speaker's leg lost (see
 * the README's "Lossy networks").
 */
export function sendAnswer(options, local, uris, router) {
  const t = transportLines(options);
  const params = { ...local.fmtp, ...(router?.parameters ?? {}) };
  const extensions = local.extensions.filter((e) => uris.has(e.uri) && e.direction !== 'recvonly' && e.direction !== 'inactive');
  const red = local.redPt !== undefined;
  const lines = [
    'v=0',
    `o=choir ${Date.now()} 1 IN IP4 0.0.0.0`,
    's=choir',
    't=0 0',
    ...t.session,
    `a=group:BUNDLE ${local.mid}`,
    `m=audio 9 UDP/TLS/RTP/SAVPF ${red ? `${local.redPt} ` : ''}${local.pt}`,
    ...t.media,
    'a=setup:passive',
    `a=mid:${local.mid}`,
    'a=recvonly',
    ...(local.rtcpRsize ? ['a=rtcp-rsize'] : []),
    ...(red ? [`a=rtpmap:${local.redPt} red/48000/2`, `a=fmtp:${local.redPt} ${local.pt}/${local.pt}`] : []),
    `a=rtpmap:${local.pt} opus/48000/2`,
    ...(hasNack(router) ? [`a=rtcp-fb:${local.pt} nack`] : []),
    ...(Object.keys(params).length ? [`a=fmtp:${local.pt} ${fmtp(params)}`] : []),
    ...extensions.map((e) => `a=extmap:${e.id} ${e.uri}`),
  ];
  return { sdp: sdp(lines), extensions, nack: hasNack(router), red };
}

/** choir's offer on the recv transport: one m-line per consumer, closed ones inactive. */
export function recvOffer(options, consumers, version) {
  const t = transportLines(options);
  const lines = [
    'v=0',
    `o=choir 1 ${version} IN IP4 0.0.0.0`,
    's=choir',
    't=0 0',
    ...t.session,
    `a=group:BUNDLE ${consumers.map((c) => c.mid).join(' ')}`,
    'a=msid-semantic: WMS *',
  ];
  for (const c of consumers) {
    const p = c.rtpParameters;
    const ssrc = p.encodings[0].ssrc;
    const stream = `choir-${c.producerId}`;
    lines.push(
      `m=audio 9 UDP/TLS/RTP/SAVPF ${p.codecs.map((codec) => codec.payloadType).join(' ')}`,
      ...t.media,
      'a=setup:actpass',
      `a=mid:${c.mid}`,
      c.closed ? 'a=inactive' : 'a=sendonly',
      'a=rtcp-rsize',
    );
    // Opus, or RED (RFC 2198) first and then Opus: `a=fmtp:<red> <opus>/<opus>`.
    for (const codec of p.codecs) {
      const name = codec.mimeType.split('/')[1].toLowerCase();
      lines.push(`a=rtpmap:${codec.payloadType} ${name}/48000/2`);
      if (hasNack(codec)) lines.push(`a=rtcp-fb:${codec.payloadType} nack`);
      if (name === 'red') lines.push(`a=fmtp:${codec.payloadType} ${Object.keys(codec.parameters ?? {}).join(';')}`);
      else if (Object.keys(codec.parameters ?? {}).length) lines.push(`a=fmtp:${codec.payloadType} ${fmtp(codec.parameters)}`);
    }
    for (const e of p.headerExtensions ?? []) lines.push(`a=extmap:${e.id} ${e.uri}`);
    if (!c.closed) {
      lines.push(
        `a=msid:${stream} ${c.id}`,
        `a=ssrc:${ssrc} cname:${p.rtcp?.cname ?? 'choir'}`,
        `a=ssrc:${ssrc} msid:${stream} ${c.id}`,
      );
    }
  }
  return sdp(lines);
}

/**
 * The client's rtpCapabilities for `consume`: Opus with the router's NACK (the browser asks for
 * what its leg lost; Firefox never NACKs audio, which does no harm), RED if the browser has it,
 * and the router's extensions this browser receives.
 */
export function recvCapabilities(router) {
  const supported = globalThis.RTCRtpReceiver?.getCapabilities?.('audio')?.headerExtensions?.map((e) => e.uri);
  const opus = router.codecs.find((c) => c.mimeType.toLowerCase() === 'audio/opus');
  const rtcpFeedback = hasNack(opus) ? [{ type: 'nack', parameter: '' }] : [];
  // RED (RFC 2198) where the browser decodes it (Chromium; not Firefox): choir then sends each
  // packet with the two frames before it, and no NACK.
  const codecs = globalThis.RTCRtpReceiver?.getCapabilities?.('audio')?.codecs ?? [];
  const red = codecs.some((c) => c.mimeType.toLowerCase() === 'audio/red');
  return {
    codecs: [
      { ...OPUS, kind: 'audio', preferredPayloadType: opus.preferredPayloadType, parameters: {}, rtcpFeedback },
      ...(red ? [{ mimeType: 'audio/red', kind: 'audio', clockRate: 48000, channels: 2, parameters: {}, rtcpFeedback: [] }] : []),
    ],
    headerExtensions: router.headerExtensions.filter(
      (e) => (e.kind ?? 'audio') === 'audio' && (supported ? supported.includes(e.uri) : !e.uri.includes('abs-send-time')),
    ),
  };
}
