// Offline search for the Large Models Workbook site (no library, nothing from the network).
// search_index.js (written by tools/build_site.py) sets window.WORKBOOK_SEARCH to
// {"pages": [{"page": "NN_x.html", "title": "..."}], "sections": [{"p": page number, "h": heading,
// "a": anchor, "t": text}]}. A section matches when every word of the query occurs in its heading,
// its chapter title or its text; hits in headings and titles count more. Enter opens the best match.
(function () {
  "use strict";
  var MAX_RESULTS = 12;

  function norm(s) {
    return s.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "");
  }

  function count(haystack, needle) {
    var n = 0, at = haystack.indexOf(needle);
    while (at !== -1) { n += 1; at = haystack.indexOf(needle, at + needle.length); }
    return n;
  }

  function snippet(text, term) {
    var at = norm(text).indexOf(term);
    if (at < 0) { return text.slice(0, 120); }
    var start = Math.max(0, at - 50);
    return (start > 0 ? "…" : "") + text.slice(start, at + 90) + "…";
  }

  function search(query) {
    var data = window.WORKBOOK_SEARCH;
    var terms = norm(query).split(/\s+/).filter(function (w) { return w.length > 0; });
    if (!data || terms.length === 0) { return []; }
    var hits = [];
    data.sections.forEach(function (s) {
      var page = data.pages[s.p];
      var head = norm(s.h), title = norm(page.title), text = norm(s.t);
      var score = 0;
      for (var i = 0; i < terms.length; i++) {
        var inHead = count(head, terms[i]), inTitle = count(title, terms[i]), inText = count(text, terms[i]);
        if (inHead + inTitle + inText === 0) { return; }
        score += 10 * inHead + 3 * inTitle + Math.min(inText, 20);
      }
      hits.push({score: score, section: s, page: page});
    });
    hits.sort(function (a, b) { return b.score - a.score; });
    return hits.slice(0, MAX_RESULTS).map(function (h) {
      return {href: h.page.page + (h.section.a ? "#" + h.section.a : ""), title: h.page.title,
              heading: h.section.h, snippet: snippet(h.section.t, terms[0])};
    });
  }

  function show(results, list, query) {
    list.textContent = "";
    if (query.trim() && results.length === 0) {
      var none = document.createElement("li");
      none.className = "workbook-noresult";
      none.textContent = "No section contains every word of “" + query.trim() + "”.";
      list.appendChild(none);
    }
    results.forEach(function (r) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = r.href;
      a.className = "workbook-result";
      a.textContent = r.heading && r.heading !== r.title ? r.title + " › " + r.heading : r.title;
      var p = document.createElement("div");
      p.className = "workbook-snippet";
      p.textContent = r.snippet;
      li.appendChild(a);
      li.appendChild(p);
      list.appendChild(li);
    });
  }

  function init() {
    var box = document.getElementById("workbook-search");
    var list = document.getElementById("workbook-results");
    if (!box || !list) { return; }
    box.addEventListener("input", function () { show(search(box.value), list, box.value); });
    box.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        var results = search(box.value);
        if (results.length) { window.location.href = results[0].href; }
      }
    });
  }

  window.workbookSearch = search;
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
