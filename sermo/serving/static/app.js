// the page's script (served apart: the Content-Security-Policy allows no inline script)
"use strict";
let recorded = null;   // a WAV Blob made from the microphone
let health = null;

fetch("health").then(r => r.json()).then(h => {
  health = h;
  const scale = h.scale ? ` dimensions on ${h.scale[0]}-${h.scale[1]}` : "";
  document.getElementById("model").textContent =
    `model: ${h.system} / ${h.row} (${h.modalities.join(" + ")});${scale}; up to ${h.max_seconds} s of audio`;
  document.getElementById("caveat").textContent = h.caveat ? `Note: ${h.caveat}.` : "";
});

function showError(text) { document.getElementById("error").textContent = text; }

// --- microphone: record, then encode 16-bit mono WAV in the page -----------------------
let media = null, chunks = [];
document.getElementById("record").onclick = async () => {
  showError("");
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    media = new MediaRecorder(stream); chunks = [];
    media.ondataavailable = e => chunks.push(e.data);
    media.onstop = async () => {
      stream.getTracks().forEach(t => t.stop());
      const buf = await new Blob(chunks).arrayBuffer();
      const ctx = new AudioContext();
      const audio = await ctx.decodeAudioData(buf);
      recorded = encodeWav(audio);
      document.getElementById("recstate").textContent = `recorded ${audio.duration.toFixed(1)} s`;
    };
    media.start();
    document.getElementById("record").disabled = true; document.getElementById("stop").disabled = false;
    document.getElementById("recstate").textContent = "recording...";
  } catch (e) { showError("cannot use the microphone: " + e); }
};
document.getElementById("stop").onclick = () => {
  if (media) media.stop();
  document.getElementById("record").disabled = false; document.getElementById("stop").disabled = true;
};

function encodeWav(audio) {
  const n = audio.length, rate = audio.sampleRate, mono = new Float32Array(n);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    const d = audio.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += d[i] / audio.numberOfChannels;
  }
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const str = (o, s) => { for (let i = 0; i < s.length; i++) view.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); str(8, "WAVE"); str(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); str(36, "data"); view.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, mono[i])) * 32767, true);
  return new Blob([view], { type: "audio/wav" });
}

// --- prediction ----------------------------------------------------------------------------
document.getElementById("file").onchange = () => { recorded = null; document.getElementById("recstate").textContent = ""; };
document.getElementById("send").onclick = async () => {
  showError("");
  const file = document.getElementById("file").files[0];
  const audio = recorded || file;
  if (!audio) { showError("choose an audio file or record some speech first"); return; }
  const form = new FormData();
  form.append("file", audio, recorded ? "recording.wav" : file.name);
  const text = document.getElementById("transcript").value.trim();
  if (text) form.append("transcript", text);
  document.getElementById("busy").textContent = "predicting...";
  try {
    const r = await fetch("predict", { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) { showError(`${r.status}: ${body.detail}`); return; }
    show(body);
  } catch (e) { showError("request failed: " + e); }
  finally { document.getElementById("busy").textContent = ""; }
};

function show(p) {
  document.getElementById("result").style.display = "block";
  const dims = document.getElementById("dims"); dims.replaceChildren();
  for (const d of ["arousal", "valence", "dominance"]) {
    if (p[d] === null || p[d] === undefined) continue;
    const row = dims.insertRow(); row.insertCell().textContent = d;
    const v = row.insertCell(); v.textContent = p[d].toFixed(3); v.id = "value-" + d;
  }
  const src = p.transcript_source ? `; transcript (${p.transcript_source}): "${p.transcript}"` : "";
  document.getElementById("meta").textContent =
    `${p.source}, ${p.duration.toFixed(2)} s; read ${p.modalities.join(" + ")}` +
    (p.scale ? `; scale ${p.scale[0]}-${p.scale[1]}` : "") + src;
  const cats = document.getElementById("cats"); cats.replaceChildren();
  if (p.categories) {
    const h = document.createElement("h3"); h.textContent = "Categories"; cats.appendChild(h);
    for (const [c, v] of Object.entries(p.categories).sort((a, b) => b[1] - a[1])) {
      // class names come from the bundle: text only, never markup
      const bar = document.createElement("div"); bar.className = "bar"; bar.dataset.category = c;
      const name = document.createElement("span"); name.textContent = c;
      const fill = document.createElement("div"); fill.style.width = `${Math.round(v * 300)}px`;
      bar.append(name, fill, document.createTextNode(`${(100 * v).toFixed(1)}%`));
      cats.appendChild(bar);
    }
  }
  plot(p);
}

function plot(p) {
  const cv = document.getElementById("va"), g = cv.getContext("2d"), W = cv.width, H = cv.height, m = 30;
  g.clearRect(0, 0, W, H);
  g.strokeStyle = "#999"; g.fillStyle = "#444"; g.font = "12px sans-serif";
  g.strokeRect(m, m / 2, W - 1.5 * m, H - 1.5 * m);
  g.beginPath(); g.moveTo(m + (W - 1.5 * m) / 2, m / 2); g.lineTo(m + (W - 1.5 * m) / 2, H - m); g.stroke();
  g.beginPath(); g.moveTo(m, m / 2 + (H - 1.5 * m) / 2); g.lineTo(W - m / 2, m / 2 + (H - 1.5 * m) / 2); g.stroke();
  g.fillText("valence \u2192", W / 2 - 20, H - 8);
  g.save(); g.translate(12, H / 2 + 30); g.rotate(-Math.PI / 2); g.fillText("arousal \u2192", 0, 0); g.restore();
  if (p.valence === null || p.arousal === null) return;
  const [lo, hi] = p.scale || [0, 1];
  const x = m + (p.valence - lo) / (hi - lo) * (W - 1.5 * m);
  const y = m / 2 + (1 - (p.arousal - lo) / (hi - lo)) * (H - 1.5 * m);
  g.fillStyle = "#d03030"; g.beginPath(); g.arc(x, y, 7, 0, 2 * Math.PI); g.fill();
  cv.dataset.valence = p.valence; cv.dataset.arousal = p.arousal;
}
