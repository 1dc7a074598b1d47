/* Shared by every relaxtune page: API calls with the session's CSRF token, readable times,
   and the two-click cancel buttons. */
(function () {
  'use strict';

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute('content') : '';
  }

  function api(method, url, body, contentType) {
    var headers = { 'X-CSRF-Token': csrf(), 'Accept': 'application/json' };
    if (contentType) { headers['Content-Type'] = contentType; }
    return fetch(url, { method: method, headers: headers, body: body, credentials: 'same-origin' });
  }

  var UNITS = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60]];

  function ago(date) {
    var seconds = Math.round((Date.now() - date.getTime()) / 1000);
    var future = seconds < 0;
    seconds = Math.abs(seconds);
    if (seconds < 60) { return future ? 'in under a minute' : 'just now'; }
    for (var i = 0; i < UNITS.length; i++) {
      var n = Math.floor(seconds / UNITS[i][1]);
      if (n >= 1) {
        var text = n + ' ' + UNITS[i][0] + (n > 1 ? 's' : '');
        return future ? 'in ' + text : text + ' ago';
      }
    }
    return 'just now';
  }

  function pad(n) { return (n < 10 ? '0' : '') + n; }

  /* <time datetime="ISO"> → "2026-12-06 21:40 (5 minutes ago)" in the reader's time zone */
  function formatTimes(root) {
    var times = (root || document).querySelectorAll('time[datetime]');
    for (var i = 0; i < times.length; i++) {
      var date = new Date(times[i].getAttribute('datetime'));
      if (isNaN(date.getTime())) { continue; }
      times[i].textContent = date.getFullYear() + '-' + pad(date.getMonth() + 1) + '-' +
        pad(date.getDate()) + ' ' + pad(date.getHours()) + ':' + pad(date.getMinutes()) +
        ' (' + ago(date) + ')';
      times[i].title = date.toString();
    }
  }

  function errorText(response, payload) {
    var detail = payload && payload.detail;
    if (detail && typeof detail === 'object' && detail.message) {
      return (detail.field ? detail.field + ': ' : '') + detail.message;
    }
    if (typeof detail === 'string') { return detail; }
    return 'HTTP ' + response.status;
  }

  document.addEventListener('click', function (event) {
    var button = event.target.closest ? event.target.closest('.cancel-job') : null;
    if (!button || button.disabled) { return; }
    if (button.getAttribute('data-armed') !== '1') {
      button.setAttribute('data-armed', '1');
      button.textContent = 'Click again to cancel';
      return;
    }
    button.disabled = true;
    button.textContent = 'Cancelling…';
    var job = button.getAttribute('data-job');
    api('DELETE', '/v1/jobs/' + encodeURIComponent(job)).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (payload) {
        if (!response.ok) {
          button.textContent = 'Cancel failed: ' + errorText(response, payload);
        }
        document.dispatchEvent(new CustomEvent('relaxtune:changed', { detail: { job: job } }));
      });
    });
  });

  window.relaxtune = { api: api, csrf: csrf, formatTimes: formatTimes, errorText: errorText };
  formatTimes(document);
})();
