import pytest

from socker_lib.errors import ReferenceError_
from socker_lib.reference import parse

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, registry, repo, tag, digest, store",
    [
        ("alpine", "docker.io", "library/alpine", "latest", None, "library/alpine/latest"),
        ("library/alpine:latest", "docker.io", "library/alpine", "latest", None, "library/alpine/latest"),
        ("user/repo:tag", "docker.io", "user/repo", "tag", None, "user/repo/tag"),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None, "library/alpine/3.19"),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None, "library/alpine/latest"),
        ("index.docker.io/u/r:1", "docker.io", "u/r", "1", None, "u/r/1"),
        ("ghcr.io/org/team/repo:tag", "ghcr.io", "org/team/repo", "tag", None, "ghcr.io/org/team/repo/tag"),
        ("localhost:5000/x/y", "localhost:5000", "x/y", "latest", None, "localhost:5000/x/y/latest"),
        ("localhost/x", "localhost", "x", "latest", None, "localhost/x/latest"),
        ("127.0.0.1:5000/x/y:1", "127.0.0.1:5000", "x/y", "1", None, "127.0.0.1:5000/x/y/1"),
        ("[::1]:5000/x:1", "[::1]:5000", "x", "1", None, "[::1]:5000/x/1"),
        (f"name@{D}", "docker.io", "library/name", None, D, f"library/name/@{D}"),
        (f"name:tag@{D}", "docker.io", "library/name", "tag", D, f"library/name/@{D}"),
        ("a.b-c/d__e/f-g:v1.0_rc-1", "a.b-c", "d__e/f-g", "v1.0_rc-1", None, "a.b-c/d__e/f-g/v1.0_rc-1"),
    ],
)
def test_parse_like_docker(text, registry, repo, tag, digest, store):
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repo, tag, digest)
    assert ref.store_path == store


def test_api_host_for_docker_hub():
    assert parse("alpine").api_host == "registry-1.docker.io"
    assert parse("localhost:5000/a").api_host == "localhost:5000"


def test_round_trip_str():
    for text in ["library/alpine:3.19", "127.0.0.1:5000/x/y:1", f"library/n@{D}"]:
        assert str(parse(text)) == text


@pytest.mark.parametrize(
    "text, part",
    [
        ("Alpine", "'Alpine'"),
        ("user/Repo", "'Repo'"),
        ("alpine:-bad", "tag '-bad'"),
        ("alpine:" + "x" * 129, "tag"),
        ("alpine@sha256:abc", "digest"),
        ("alpine@sha256:" + "A" * 64, "digest"),
        ("a//b", "component ''"),
        ("a/b_", "'b_'"),
        ("my_reg.io/x", "registry 'my_reg.io'"),
        ("", "empty"),
        (" alpine", "whitespace"),
        ("x/" + "a" * 260, "longer than 255"),
    ],
)
def test_invalid_names_say_which_part(text, part):
    with pytest.raises(ReferenceError_) as ei:
        parse(text)
    assert part in ei.value.message
