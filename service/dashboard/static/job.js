/* A job page (and the comparison page): draws the figures embedded in the page, then, while
   the job runs, asks the JSON endpoint for changes and updates the page in place. Zoom and
   legend choices survive updates (plotly's uirevision). */
(function () {
  'use strict';
  var source = document.getElementById('dashboard-data');
  if (!source) { return; }
  var state = JSON.parse(source.textContent);
  var CONFIG = { responsive: true, displaylogo: false };
  var etag = state.live ? state.live.etag : null;
  var timer = null;
  var known = {};  // the latest payload of every chart: updates carry only the changed ones

  function draw(figures) {
    Object.keys(figures || {}).forEach(function (id) { known[id] = figures[id]; });
    Object.keys(figures || {}).forEach(function (id) {
      var plot = document.getElementById(id + '-plot');
      if (!plot) { return; }
      var section = plot.closest('section');
      var message = section ? section.querySelector('.chart-message') : null;
      var note = section ? section.querySelector('.note') : null;
      var figure = figures[id];
      if (figure.message) {
        if (plot.classList.contains('js-plotly-plot')) { Plotly.purge(plot); }
        plot.hidden = true;
        if (message) { message.textContent = figure.message; message.hidden = false; }
      } else {
        if (message) { message.hidden = true; }
        plot.hidden = false;
        figure.layout.uirevision = 'keep';
        Plotly.react(plot, figure.data, figure.layout, CONFIG);
      }
      if (note) { note.textContent = figure.note || ''; note.hidden = !figure.note; }
    });
  }

  function setStatus(text) {
    var element = document.getElementById('live-status');
    if (element) { element.textContent = text; }
  }

  function update(payload) {
    Object.keys(payload.fragments || {}).forEach(function (id) {
      var element = document.getElementById(id);
      if (element) {
        element.innerHTML = payload.fragments[id];
        window.relaxtune.formatTimes(element);
      }
    });
    var charts = document.getElementById('charts');
    if (charts && payload.has_trials) { charts.hidden = false; }
    // a replaced fragment may hold a chart that did not change: draw it again from memory
    var redraw = {};
    var plots = document.querySelectorAll('[data-figure]');
    for (var i = 0; i < plots.length; i++) {
      var id = plots[i].getAttribute('data-figure');
      if (!plots[i].classList.contains('js-plotly-plot') && known[id] && !(id in (payload.figures || {}))) {
        redraw[id] = known[id];
      }
    }
    draw(Object.assign(redraw, payload.figures || {}));
    if (payload.finished) { state.live = null; }
  }

  function schedule() {
    if (state.live) { timer = window.setTimeout(poll, state.live.interval_s * 1000); }
  }

  function poll() {
    timer = null;
    if (!state.live) { return; }
    var headers = { 'Accept': 'application/json' };
    if (etag) { headers['If-None-Match'] = etag; }
    fetch(state.live.url, { headers: headers, credentials: 'same-origin', cache: 'no-store' })
      .then(function (response) {
        if (response.status === 304) { return null; }
        if (!response.ok) { throw new Error('HTTP ' + response.status); }
        etag = response.headers.get('ETag');
        return response.json();
      })
      .then(function (payload) {
        if (payload) { update(payload); }
        var now = new Date();
        setStatus(state.live ? 'live: checked ' + now.toLocaleTimeString() : 'finished; updates stopped');
        schedule();
      })
      .catch(function (error) {
        setStatus('update failed (' + error.message + '); retrying');
        schedule();
      });
  }

  draw(state.figures);
  if (window.addEventListener) {
    window.addEventListener('load', function () { window.dispatchEvent(new Event('resize')); });
  }
  document.addEventListener('relaxtune:changed', function () {
    if (state.live) {
      if (timer !== null) { window.clearTimeout(timer); }
      poll();
    }
  });
  if (state.live) { setStatus('live'); schedule(); }
})();
