/* The job list: submit a spec, cancel jobs, and keep the rows current while jobs run. */
(function () {
  'use strict';
  var rows = document.getElementById('jobs-rows');
  var form = document.getElementById('submit-form');
  var text = document.getElementById('spec-text');
  var file = document.getElementById('spec-file');
  var errors = document.getElementById('submit-errors');
  var ok = document.getElementById('submit-ok');
  var INTERVAL_MS = 5000;

  function active() {
    // not while a cancel button waits for its second click: the refresh would reset it
    return rows.querySelector('tr[data-status="queued"], tr[data-status="running"]') !== null &&
      rows.querySelector('.cancel-job[data-armed="1"]') === null;
  }

  function refresh() {
    var checked = {};
    var boxes = rows.querySelectorAll('input[name="job"]:checked');
    for (var i = 0; i < boxes.length; i++) { checked[boxes[i].value] = true; }
    return fetch(rows.getAttribute('data-src'), { credentials: 'same-origin', cache: 'no-store' })
      .then(function (response) {
        if (!response.ok) { throw new Error('HTTP ' + response.status); }
        return response.text();
      })
      .then(function (html) {
        rows.innerHTML = html;
        var again = rows.querySelectorAll('input[name="job"]');
        for (var j = 0; j < again.length; j++) { again[j].checked = !!checked[again[j].value]; }
        window.relaxtune.formatTimes(rows);
      });
  }

  function loop() {
    window.setTimeout(function () {
      (active() ? refresh() : Promise.resolve()).catch(function () {}).then(loop);
    }, INTERVAL_MS);
  }

  function show(list, messages) {
    list.innerHTML = '';
    messages.forEach(function (message) {
      var item = document.createElement('li');
      item.textContent = message;
      list.appendChild(item);
    });
    list.hidden = messages.length === 0;
  }

  file.addEventListener('change', function () {
    if (!file.files.length) { return; }
    file.files[0].text().then(function (content) { text.value = content; });
  });

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    ok.hidden = true;
    show(errors, []);
    var body = text.value;
    if (!body.trim()) { show(errors, ['spec: paste a job spec or choose a file']); return; }
    var type = /^\s*\{/.test(body) ? 'application/json' : 'application/yaml';
    window.relaxtune.api('POST', '/v1/jobs', body, type).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (payload) {
        if (response.status === 201 && payload) {
          ok.textContent = '';
          ok.appendChild(document.createTextNode('Queued '));
          var link = document.createElement('a');
          link.href = '/v1/jobs/' + encodeURIComponent(payload.id) + '/dashboard';
          link.textContent = payload.name + ' (' + payload.id + ')';
          ok.appendChild(link);
          ok.hidden = false;
          text.value = '';
          return refresh();
        }
        show(errors, [window.relaxtune.errorText(response, payload)]);
        return null;
      });
    }).catch(function (error) { show(errors, ['request failed: ' + error.message]); });
  });

  document.addEventListener('relaxtune:changed', function () { refresh().catch(function () {}); });
  loop();
})();
