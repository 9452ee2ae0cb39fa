// The user page's live notices: a toast as each badge arrives, and the header's count of new
// (unseen) badges. Plain JavaScript, no build step, nothing loaded from elsewhere.
//
// The page is rendered with the ids of the user's unseen awards (`data-ids` of #unseen). An
// EventSource on /users/{id}/notices gives one "notice" event per change of what the user
// holds; the browser sends the last event's id back as Last-Event-ID when it reconnects, so
// nothing still in the stream is missed. Each time the stream (re)opens, the count is taken
// again from /users/{id}/unseen: it is the record, and covers notices a long outage lost.
// Clicking the count marks those awards seen (POST /users/{id}/seen).
(function () {
  "use strict";

  var TOAST_SHOWN_MS = 6000;
  var TOAST_FADE_MS = 400;
  var QUIET = { revoked: "was taken away", expired: "expired", replaced: "was replaced" };

  var toasts = document.getElementById("toasts");
  var button = document.getElementById("unseen");
  if (!toasts || !button || !window.EventSource) {
    return;
  }
  var user = toasts.dataset.user;
  var base = "/users/" + encodeURIComponent(user);
  var images = JSON.parse(toasts.dataset.images);
  var unseen = new Set(JSON.parse(button.dataset.ids));

  function showCount() {
    var count = unseen.size;
    button.querySelector(".count").textContent = String(count);
    button.setAttribute("aria-label", count + (count === 1 ? " new badge" : " new badges"));
    button.classList.toggle("has-new", count > 0);
  }

  function toast(notice) {
    var award = notice.award;
    var name = award.name || award.slug;
    var element = document.createElement("div");
    element.className = "toast " + notice.change;
    element.dataset.slug = award.slug;
    element.dataset.level = String(award.level);
    element.setAttribute("role", "status");

    var medal = document.createElement("div");
    medal.className = "medal small";
    var image = images[award.slug + ":" + award.level];
    if (image) {
      var img = document.createElement("img");
      img.src = image;
      img.alt = "";
      img.width = 32;
      img.height = 32;
      medal.appendChild(img);
    }
    var text = document.createElement("div");
    text.className = "text";
    var title = document.createElement("strong");
    title.className = "title";
    // textContent, never innerHTML: names and reasons are text.
    title.textContent = notice.change === "granted"
      ? "You earned " + name
      : name + " " + (QUIET[notice.change] || notice.change);
    text.appendChild(title);
    if (notice.change === "granted" && award.description) {
      var detail = document.createElement("span");
      detail.className = "detail";
      detail.textContent = award.description;
      text.appendChild(detail);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "dismiss";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    close.addEventListener("click", function () {
      dismiss(element);
    });
    element.append(medal, text, close);
    toasts.appendChild(element);
    element.timer = window.setTimeout(function () {
      dismiss(element);
    }, TOAST_SHOWN_MS);
  }

  function dismiss(element) {
    window.clearTimeout(element.timer);
    element.classList.add("leaving");
    window.setTimeout(function () {
      element.remove();
    }, TOAST_FADE_MS);
  }

  // The notices that arrived while a refresh of the count was on its way: applied on top of
  // its answer, which may be older than they are.
  var pending = null;

  function refreshCount() {
    var changes = { granted: new Set(), ended: new Set() };
    pending = changes;
    fetch(base + "/unseen", { headers: { accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : Promise.reject(response.status);
      })
      .then(function (body) {
        unseen = new Set(body.awards.map(function (award) { return award.id; }));
        changes.granted.forEach(function (id) { unseen.add(id); });
        changes.ended.forEach(function (id) { unseen.delete(id); });
        showCount();
      })
      .catch(function () {})  // The count stays as it was; the next opening tries again.
      .finally(function () {
        if (pending === changes) {
          pending = null;
        }
      });
  }

  button.addEventListener("click", function () {
    var ids = Array.from(unseen);
    fetch(base + "/seen", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ids: ids }),
    }).then(function (response) {
      if (response.ok) {
        ids.forEach(function (id) { unseen.delete(id); });
        showCount();
        toasts.querySelectorAll(".toast").forEach(dismiss);
      }
    });
  });

  var source = new EventSource(base + "/notices");
  source.addEventListener("open", function () {
    document.body.dataset.live = "open";
    refreshCount();
  });
  source.addEventListener("error", function () {
    // EventSource reconnects by itself, after the last event it got.
    document.body.dataset.live = "reconnecting";
  });
  source.addEventListener("notice", function (event) {
    var notice = JSON.parse(event.data);
    var id = notice.award.id;
    if (notice.change === "granted") {
      unseen.add(id);
    } else {
      unseen.delete(id);  // An award no longer held leaves the unseen list.
    }
    if (pending) {
      (notice.change === "granted" ? pending.granted : pending.ended).add(id);
    }
    showCount();
    toast(notice);
  });
  showCount();
})();
