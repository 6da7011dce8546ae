// Plays ?src= (see ?player= below) and, for every frame the browser presents,
// reads the wall-clock time painted into it by clock_pusher.py: latency = now - frame time.
// Results accumulate in window.results for the runner to collect. With ?wait=1 the page
// is a viewer waiting for the stream: it polls until the stream is up, then plays.
"use strict";
const params = new URLSearchParams(location.search);
const results = (window.results = {
  samples: [], // [ms since page start, latency ms]
  firstFrameMs: null,
  firstFrameAt: null, // wall clock (Unix ms) of the first frame presented
  stalls: 0,
  unreadable: 0,
  errors: [],
});
const video = document.getElementById("video");
const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d", { willReadFrequently: true });
const started = performance.now();
const MOD = 2 ** 40;

function readClock() {
  context.drawImage(video, 0, 0, 640, 120, 0, 0, 640, 120);
  const pixels = context.getImageData(0, 0, 640, 120).data;
  let value = 0;
  let check = 0;
  for (let i = 0; i < 48; i++) {
    const x = (i % 16) * 40 + 20;
    const y = Math.floor(i / 16) * 40 + 20;
    const bit = pixels[(y * 640 + x) * 4] > 127 ? 1 : 0;
    if (i < 40) value = value * 2 + bit;
    else check = check * 2 + bit;
  }
  let sum = 0;
  for (let b = 4, v = value; b >= 0; b--, v = Math.floor(v / 256)) sum += v % 256;
  return sum % 256 === check ? value : null;
}

function onFrame() {
  const painted = readClock();
  if (painted === null) {
    results.unreadable++;
  } else {
    if (results.firstFrameMs === null) {
      results.firstFrameMs = performance.now() - started;
      results.firstFrameAt = Date.now();
    }
    const latency = (((Date.now() % MOD) - painted) % MOD + MOD) % MOD;
    results.samples.push([performance.now() - started, latency]);
  }
  video.requestVideoFrameCallback(onFrame);
}

video.addEventListener("waiting", () => {
  if (results.firstFrameMs !== null) results.stalls++;
});
video.requestVideoFrameCallback(onFrame);

// ?player= picks how to play ?src=:
// - "stock": hls.js with lowLatencyMode and nothing else, as any other page or player would;
// - "tuned": the web app's own settings (the hold-back as target, catch-up to 1.5x);
// - "whep": WebRTC through WHEP (?src= is the WHEP endpoint), as the web app does first.
const player = params.get("player") ?? "tuned";
const src = params.get("src");

function play() {
  if (player === "whep") {
    playWhep(src).catch((e) => results.errors.push(`whep: ${e.message}`));
  } else {
    const config = player === "stock"
      ? { lowLatencyMode: true }
      : { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, backBufferLength: 10 };
    // ?debug=1: hls.js's own log in the console (how it picked its start, what it loaded).
    const hls = new Hls({ ...config, debug: params.has("debug") });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) results.errors.push(`${data.type}: ${data.details}`);
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  }
  video.play().catch((e) => results.errors.push(`play: ${e}`));
}

// A waiting viewer's page asks every 50 ms whether the stream is up (for WHEP, the same
// box's LL-HLS master: a box offers both at once), as a watch page waiting for its
// streamer does.
async function waitThenPlay() {
  const ready = player === "whep" ? src.replace(/\/whep\/([^/]+)$/, "/hls/$1/master.m3u8") : src;
  while (!(await fetch(ready, { cache: "no-store" }).then((r) => r.ok).catch(() => false))) {
    await new Promise((r) => setTimeout(r, 50));
  }
  play();
}

if (params.get("wait")) waitThenPlay();
else play();

async function playWhep(endpoint) {
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (event) => stream.addTrack(event.track);
  await pc.setLocalDescription(await pc.createOffer());
  const response = await fetch(endpoint, { method: "POST", headers: { "content-type": "application/sdp" }, body: pc.localDescription.sdp });
  if (response.status !== 201) throw new Error(`${response.status} ${await response.text()}`);
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  video.srcObject = stream;
  video.play().catch((e) => results.errors.push(`play: ${e}`));
}
