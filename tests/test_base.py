from __future__ import annotations

from typing import Any

import pytest

from abadges import (
    Badge,
    BadgeAlreadyRegisteredError,
    BadgeAwarded,
    BadgeDefinitionError,
    BadgeDetail,
    BadgeNotRegisteredError,
    BadgeRegistry,
    InvalidAwardError,
    InvalidLevelError,
)


class PointsBadge(Badge):
    slug = "points"
    levels = ["Bronze", "Silver", BadgeDetail("Gold", "Over 10,000 points")]
    events = ["points_awarded"]

    def award(self, **state: Any) -> BadgeAwarded | None:
        return None


def make_badge(**attributes: Any) -> type[Badge]:
    """A badge class with valid defaults, overridden (or removed, with ...) by `attributes`."""
    namespace: dict[str, Any] = {
        "slug": "example",
        "levels": ["Only"],
        "events": ["happened"],
        "award": lambda self, **state: None,
    }
    namespace.update(attributes)
    return type("ExampleBadge", (Badge,), {k: v for k, v in namespace.items() if v is not ...})


def test_levels_become_details_without_touching_the_class() -> None:
    badge = PointsBadge()
    assert tuple(badge.levels) == (
        BadgeDetail("Bronze"),
        BadgeDetail("Silver"),
        BadgeDetail("Gold", "Over 10,000 points"),
    )
    assert PointsBadge.levels == ["Bronze", "Silver", BadgeDetail("Gold", "Over 10,000 points")]
    assert badge.detail(3).description == "Over 10,000 points"


def test_freeze_returns_the_state_by_default() -> None:
    assert PointsBadge().freeze(user=1, day=2) == {"user": 1, "day": 2}


@pytest.mark.parametrize(
    ("result", "level"),
    [(None, None), (BadgeAwarded(level=1), 1), (BadgeAwarded(level=3), 3)],
)
def test_level_awarded(result: BadgeAwarded | None, level: int | None) -> None:
    assert PointsBadge().level_awarded(result) == level


def test_single_level_badge_may_omit_the_level() -> None:
    assert make_badge()().level_awarded(BadgeAwarded()) == 1


@pytest.mark.parametrize(
    ("result", "error", "message"),
    [
        (
            BadgeAwarded(level=4),
            InvalidLevelError,
            "Badge 'points' has 3 level(s); BadgeAwarded(level=4) is out of range.",
        ),
        (
            BadgeAwarded(level=0),
            InvalidLevelError,
            "Badge 'points' has 3 level(s); BadgeAwarded(level=0) is out of range.",
        ),
        (
            BadgeAwarded(level=True),
            InvalidLevelError,
            "Badge 'points' has 3 level(s); BadgeAwarded(level=True) is out of range.",
        ),
        (
            BadgeAwarded(),
            InvalidLevelError,
            "Badge 'points' has 3 levels; award() returned BadgeAwarded() without a level.",
        ),
        (
            True,
            InvalidAwardError,
            "Badge 'points' award() returned True; expected a BadgeAwarded or None.",
        ),
    ],
)
def test_unusable_award_results(result: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        PointsBadge().level_awarded(result)
    assert str(caught.value) == message


@pytest.mark.parametrize("level", [0, 4, "1", 1.0, None])
def test_check_level_refuses_what_is_not_a_level(level: object) -> None:
    with pytest.raises(InvalidLevelError, match=r"Badge 'points' has 3 level\(s\); level"):
        PointsBadge().check_level(level)


def test_register_indexes_badges_by_slug_and_event() -> None:
    registry = BadgeRegistry()
    assert registry.register(PointsBadge) is PointsBadge
    badge = registry.get_badge("points")
    assert isinstance(badge, PointsBadge)
    assert registry._events == {"points_awarded": [badge]}


def test_register_works_as_a_decorator_and_repeats_harmlessly() -> None:
    registry = BadgeRegistry()

    @registry.register
    class Decorated(Badge):
        slug = "decorated"
        levels = ["One"]
        events = ["a", "b", "a"]

        def award(self, **state: Any) -> None:
            return None

    assert registry.register(Decorated) is Decorated
    badge = registry.get_badge("decorated")
    assert registry._events == {"a": [badge], "b": [badge]}


def test_duplicate_slug_names_both_classes() -> None:
    registry = BadgeRegistry()
    registry.register(PointsBadge)
    with pytest.raises(BadgeAlreadyRegisteredError) as caught:
        registry.register(make_badge(slug="points"))
    assert str(caught.value) == (
        "ExampleBadge.slug is 'points', which PointsBadge already registered."
    )
    assert isinstance(registry.get_badge("points"), PointsBadge)


def test_get_badge_unknown_slug() -> None:
    registry = BadgeRegistry()
    registry.register(PointsBadge)
    with pytest.raises(BadgeNotRegisteredError) as caught:
        registry.get_badge("pionts")
    assert str(caught.value) == (
        "No badge with slug 'pionts' is registered; registered slugs: ['points']."
    )


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"slug": ...}, "ExampleBadge has no 'slug' attribute."),
        ({"levels": ...}, "ExampleBadge has no 'levels' attribute."),
        ({"events": ...}, "ExampleBadge has no 'events' attribute."),
        ({"slug": ""}, "ExampleBadge.slug must be a non-empty string; got ''."),
        ({"slug": 7}, "ExampleBadge.slug must be a non-empty string; got 7."),
        ({"slug": "a\x00b"}, "ExampleBadge.slug 'a\\x00b' holds a NUL or a lone surrogate, which"),
        ({"slug": "\ud800"}, "ExampleBadge.slug '\\ud800' holds a NUL or a lone surrogate, which"),
        ({"slug": "s" * 101}, "ExampleBadge.slug is 101 characters long; the limit is 100."),
        ({"levels": []}, "ExampleBadge.levels must be a non-empty list of str or BadgeDetail"),
        ({"levels": "Gold"}, "ExampleBadge.levels must be a non-empty list of str or BadgeDetail"),
        ({"levels": [1]}, "ExampleBadge.levels must hold non-empty str or BadgeDetail items"),
        (
            {"levels": [f"L{n}" for n in range(32_768)]},
            "ExampleBadge.levels has 32768 levels; the limit is 32767.",
        ),
        ({"events": []}, "ExampleBadge.events must be a non-empty list of str; got []."),
        ({"events": "points"}, "ExampleBadge.events must be a non-empty list of str"),
        ({"events": [""]}, "ExampleBadge.events must hold non-empty str items; got ''."),
        ({"multiple": 1}, "ExampleBadge.multiple must be True or False; got 1."),
        ({"deferred": "yes"}, "ExampleBadge.deferred must be True or False; got 'yes'."),
        (
            {"multiple": True, "levels": ["Bronze", "Silver"]},
            "ExampleBadge sets multiple = True with 2 levels; "
            "a badge awarded more than once must have a single level.",
        ),
        ({"award": ...}, "ExampleBadge does not define award(self, **state)."),
        (
            {"async": True},
            "ExampleBadge sets 'async', brabeion's flag for deferred badges; "
            "rename it to 'deferred'.",
        ),
        (
            {"async_": False},
            "ExampleBadge sets 'async_', pinax-badges' flag for deferred badges; "
            "rename it to 'deferred'.",
        ),
    ],
)
def test_bad_definitions_fail_at_register(attributes: dict[str, Any], message: str) -> None:
    registry = BadgeRegistry()
    with pytest.raises(BadgeDefinitionError) as caught:
        registry.register(make_badge(**attributes))
    assert str(caught.value).startswith(message)
    assert registry.registered == {}
    assert registry._events == {}


@pytest.mark.parametrize("value", [PointsBadge(), object, "points"])
def test_register_refuses_what_is_not_a_badge_class(value: Any) -> None:
    with pytest.raises(BadgeDefinitionError, match="register\\(\\) takes a Badge subclass"):
        BadgeRegistry().register(value)
