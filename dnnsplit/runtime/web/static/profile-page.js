// The phone's profiling page: download the whole model, profile it here, POST the trace to the server
// (/web/profiles), which turns it into a dnnsplit profile and saves it.

import { profileModel } from './profile.js';

const $ = (id) => document.getElementById(id);

function setStatus(text, kind = 'busy') {
  $('status').textContent = text;
  $('status').dataset.state = kind;
}

async function start() {
  $('start').disabled = true;
  try {
    const config = await (await fetch('profile-config.json')).json();
    if (config.error) throw new Error(config.error);
    setStatus(`downloading ${config.name}…`);
    // The model and the profile both need the server's token, when it has one (?token= in the page's URL).
    const token = new URLSearchParams(location.search).get('token');
    const auth = token ? { authorization: `Bearer ${token}` } : {};
    const download = await fetch(config.model_url, { headers: auth });
    if (!download.ok) throw new Error((await download.json().catch(() => ({}))).error || download.statusText);
    const model = await download.arrayBuffer();
    const repeat = Math.max(1, Number($('repeat').value) || config.repeat);
    const measured = await profileModel({
      model, inputShape: config.input_shape, warmup: config.warmup, repeat,
      onProgress: (stage, done, total) => { setStatus(`${stage}…`); $('progress').value = done / total; },
    });
    setStatus('sending the profile…');
    const headers = { 'content-type': 'application/json', ...auth };
    const answer = await fetch('profiles', { method: 'POST', headers, body: JSON.stringify(measured) });
    const saved = await answer.json();
    if (!answer.ok) throw new Error(saved.error || answer.statusText);
    $('summary').innerHTML = [
      ['saved as', saved.file], ['backend', measured.device.backend], ['whole model', `${saved.latency_ms.toFixed(2)} ms`],
      ['sum of layers', `${saved.layer_sum_ms.toFixed(2)} ms`], ['layers', saved.layers],
    ].map(([a, b]) => `<tr><td>${a}</td><td>${b}</td></tr>`).join('');
    window.dnnsplitSaved = saved;
    setStatus('done: the profile is on the server', 'done');
  } catch (err) {
    setStatus(`error: ${err.message || err}`, 'error');
  } finally {
    $('start').disabled = false;
  }
}

fetch('profile-config.json').then((r) => r.json()).then((c) => { $('model').textContent = c.name || 'the model'; $('repeat').value = c.repeat; }).catch(() => {});
$('start').addEventListener('click', start);
