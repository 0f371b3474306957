"""Spec files as users write them: duplicate keys, empty files, aliases, login names, unreadable paths."""

from __future__ import annotations

import pytest

from groundup.spec import MAX_SPEC_NODES, SpecError, load_spec, parse_spec, parse_spec_text


def refusal(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec_text(text)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("name: one\nname: two\n", "'name'", "line 2"),
        ("name: a\nssh:\n  port: 22\n  user: x\n  port: 23\n", "'port'", "line 5"),
        ("name: a\nssh: {user: x, user: y}\n", "'user'", "line 2"),
        ("name: a\ntags:\n  team: a\n  team: b\n", "'team'", "line 4"),
    ],
    ids=["top-level", "nested", "flow-mapping", "tags"],
)
def test_duplicate_key_is_refused_naming_key_and_line(text, key, line):
    message = refusal(text)
    assert f"duplicate key {key}" in message and line in message


def test_merge_key_may_be_overridden_without_counting_as_duplicate():
    text = "name: merged\n<<: {region: us-east-1}\nregion: us-west-2\n"
    assert parse_spec_text(text).region == "us-west-2"


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n", "---\n"], ids=["empty", "blank", "comment", "bare-document"])
def test_empty_spec_is_refused_instead_of_becoming_the_guide_cluster(text):
    assert "empty" in refusal(text) and "name" in refusal(text)


def test_spec_without_a_name_is_refused():
    assert "name: required" in refusal("region: us-east-2\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "mapping"),
        ("just words\n", "mapping"),
        ("name: [unclosed\n", "line 2"),
        ("name: a\n---\nname: b\n", "single document"),
        ("name: !!python/object:os.system {}\n", "python/object"),
        ("? [a, b]\n: 1\nname: x\n", "mapping key"),
    ],
    ids=["list", "scalar", "broken", "two-documents", "python-tag", "list-key"],
)
def test_malformed_yaml_is_refused_with_a_reason(text, expected):
    assert expected in refusal(text)


def test_alias_bomb_is_refused_before_validation():
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdef", "bcdefg"):
        levels.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    assert 9 ** 7 > MAX_SPEC_NODES
    assert "alias" in refusal("name: x\n" + "\n".join(levels) + "\n")


def test_a_few_aliases_are_fine():
    text = "name: x\nssh_ingress_cidrs: &office [10.1.0.0/16]\napi_ingress_cidrs: *office\n"
    assert [str(c) for c in parse_spec_text(text).api_ingress_cidrs] == ["10.1.0.0/16"]


@pytest.mark.parametrize("user", ["ubuntu", "ec2-user", "_svc", "admin01", "a" * 32])
def test_posix_login_names_are_accepted(user):
    assert parse_spec({"ssh": {"user": user}}).ssh.user == user


@pytest.mark.parametrize("user", ["root; id", "-oProxyCommand=x", "Ubuntu", "1abc", "", "a b", "a" * 33, "$(id)", "user\n"])
def test_ssh_user_must_be_a_posix_login_name(user):
    with pytest.raises(SpecError, match="ssh.user: .*POSIX login name"):
        parse_spec({"ssh": {"user": user}})


@pytest.mark.parametrize("domain", ["cluster.local; rm", "Cluster.Local", "-x.local", "a..b", ""])
def test_cluster_domain_must_be_a_dns_name(domain):
    with pytest.raises(SpecError, match="cluster_domain"):
        parse_spec({"cluster_domain": domain})


def test_bastion_must_be_user_at_host_port():
    with pytest.raises(SpecError, match="ssh.bastion"):
        parse_spec({"ssh": {"access": "bastion", "bastion": "ubuntu@host;id"}})


def test_bastion_access_is_refused_before_any_aws_call_as_not_implemented():
    with pytest.raises(SpecError, match="ssh.access: 'bastion' is not implemented yet") as refused:
        parse_spec({"ssh": {"access": "bastion", "bastion": "ubuntu@bastion.example.com:22"}})
    assert "public_ip" in str(refused.value) and "private_ip" in str(refused.value)


def test_load_spec_messages_do_not_repeat_the_path(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) not in str(info.value) and "not valid YAML" in str(info.value)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d, "is a directory"),
        (lambda d: d / "missing.yaml", "no such file"),
        (lambda d: (d / "bin.yaml").write_bytes(b"name: \xff\xfe\x00") and d / "bin.yaml", "UTF-8"),
        (lambda d: (d / "big.yaml").write_bytes(b"name: x\n" + b"#" * (1 << 21)) and d / "big.yaml", "larger than"),
    ],
    ids=["directory", "missing", "binary", "huge"],
)
def test_unreadable_spec_paths_are_refused(tmp_path, make, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(make(tmp_path))
