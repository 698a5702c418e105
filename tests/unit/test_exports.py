from __future__ import annotations

import bottle


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert bottle.__all__ == sorted(bottle.__all__)
    for name in bottle.__all__:
        assert getattr(bottle, name) is not None, name


def test_every_python_on_whales_exception_maps_to_a_bottle_error() -> None:
    import inspect

    import python_on_whales.exceptions as pow_exceptions
    from python_on_whales.client_config import ClientNotFoundError, ParsingError

    from bottle.engine.errors import translate
    from bottle.errors import BottleError

    classes = [
        cls
        for _, cls in inspect.getmembers(pow_exceptions, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == pow_exceptions.__name__
    ]
    assert classes
    for cls in classes:
        mapped = translate(cls(["docker", "x"], 1, b"", b"boom"), "doing x")
        assert isinstance(mapped, BottleError), cls
    assert isinstance(translate(ClientNotFoundError(), "x"), BottleError)
    assert isinstance(translate(ParsingError("bad"), "x"), BottleError)
    daemon = translate(
        pow_exceptions.DockerException(["docker"], 1, b"", b"Cannot connect to the Docker daemon"),
        "x",
    )
    assert type(daemon).__name__ == "DockerUnavailable"
