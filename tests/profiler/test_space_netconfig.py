"""The net.config reader and the one --arch reader (load_arch / load_network)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from latkit.core.errors import ArchError, UnknownNameError, UsageError
from latkit.profiler.ops import Act, OpType
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces._util import make_divisible
from latkit.profiler.spaces.load import load_arch, load_network
from latkit.profiler.spaces.netconfig import is_netconfig, network_from_netconfig, read_netconfig
from latkit.profiler.spaces.proxyless import ProxylessMobileSpace

LUTS = (Path(__file__).resolve().parents[2] / "data" / "luts")
CONFIGS = ("cpu", "gpu", "mobile", "mobile_14")
PUBLISHED_WIDTHS = (32, 40, 80, 96, 192, 320)


def _config(name: str) -> Path:
    return LUTS / f"proxyless_{name}.config"


@pytest.fixture(scope="module")
def trim_keys() -> set[str]:
    return set(yaml.safe_load((LUTS / "proxylessnas_mobile_trim.yaml").read_text()))


# ---- net.config reader ----


@pytest.mark.parametrize("name", CONFIGS)
def test_published_configs_build_chained_networks(name):
    cfg = read_netconfig(_config(name))
    net = network_from_netconfig(cfg)
    assert len(net.layers) == 1 + 22 + 2
    assert net.input_shape == (224, 224, 3)
    specs = net.specs
    for prev, spec in zip(specs, specs[1:]):
        assert spec.input_shape == prev.output_shape
    assert specs[0].output_shape[2] == cfg["first_conv"]["out_channels"]
    assert specs[-2].op_type is OpType.HEAD_CONV and specs[-2].act is Act.RELU6
    assert specs[-1].key == f"Logits-input:7x7x{cfg['classifier']['in_features']}-output:1000"
    zeros = sum(1 for b in cfg["blocks"] if b["mobile_inverted_conv"]["name"] == "ZeroLayer")
    assert sum(1 for s in specs if s.op_type is OpType.ZERO) == zeros
    assert [s.idskip for s in specs[1:-2] if s.measurable] == [
        b["shortcut"] is not None for b in cfg["blocks"]
        if b["mobile_inverted_conv"]["name"] != "ZeroLayer"
    ]


def test_published_configs_against_the_trim_table(trim_keys):
    found = {}
    for name in CONFIGS:
        keys = {s.key for s in network_from_netconfig(_config(name)).measurable_specs()}
        found[name] = (len(keys & trim_keys), len(keys))
    # only the mobile net shares widths with the table's space (all but stage 1);
    # cpu, gpu and mobile_14 are wider everywhere, from the stem on
    assert found == {"cpu": (0, 17), "gpu": (0, 16), "mobile": (14, 17), "mobile_14": (0, 17)}


def test_mobile_config_matches_the_space_arch():
    cfg = read_netconfig(_config("mobile"))
    net = network_from_netconfig(cfg)
    default = get_space("proxyless_mobile")
    arch = default.arch_from_netconfig(cfg)
    keys = {s.key for s in net.measurable_specs()}
    space_keys = {s.key for s in default.network(arch).measurable_specs()}
    # same ops everywhere; only the stage-1 width (24 in the space, 32 released) differs
    differing = keys ^ space_keys
    assert len(differing) == 6
    assert all(":56x56x" in k for k in differing)
    published = ProxylessMobileSpace(stage_widths=PUBLISHED_WIDTHS)
    assert {s.key for s in published.network(arch).measurable_specs()} == keys


def _ofa_netconfig(space, native: dict, with_mid: bool = True) -> dict:
    """An OFA-style net.config of ``native`` (dropped blocks left out, as OFA does)."""
    def conv(cin, cout, k=1, stride=1, act="h_swish", name="ConvLayer", **extra):
        return {"name": name, "in_channels": cin, "out_channels": cout, "kernel_size": k,
                "stride": stride, "act_func": act, **extra}

    stem = space.stem_width
    identity = {"name": "IdentityLayer", "in_channels": stem, "out_channels": stem}
    blocks = [{"name": "ResidualBlock", "shortcut": identity,
               "conv": conv(stem, stem, 3, 1, "relu", "MBConvLayer", expand_ratio=1)}]
    cin = stem
    for s, width in enumerate(space.stage_widths):
        for b in range(native["d"][s]):
            i, stride = 4 * s + b, ((2, 2, 2, 1, 2)[s] if b == 0 else 1)
            mid = make_divisible(round(cin * native["e"][i])) if with_mid else None
            op = conv(cin, width, native["ks"][i], stride, "h_swish" if s >= 2 else "relu",
                      "MBConvLayer", expand_ratio=native["e"][i], mid_channels=mid,
                      use_se=s in (1, 3, 4))
            shortcut = identity if stride == 1 and cin == width else None
            blocks.append({"name": "ResidualBlock", "conv": op, "shortcut": shortcut})
            cin = width
    fe, fm = space.final_expand_width, space.feature_mix_width
    return {
        "name": "MobileNetV3", "first_conv": conv(3, stem, 3, 2), "blocks": blocks,
        "final_expand_layer": conv(cin, fe), "feature_mix_layer": conv(fe, fm, use_bn=False),
        "classifier": {"name": "LinearLayer", "in_features": fm, "out_features": 1000},
    }


@pytest.mark.parametrize("space_name", ["ofa_mbv3", "ofa_mbv3_w10"])
@pytest.mark.parametrize("with_mid", [True, False])
def test_ofa_style_config_matches_the_ofa_space(space_name, with_mid):
    space = get_space(space_name)
    rng = np.random.default_rng(17)
    for _ in range(5):
        arch = space.sample(rng)
        native = space.arch_to_native(arch)
        cfg = json.loads(json.dumps(_ofa_netconfig(space, native, with_mid)))
        net = network_from_netconfig(cfg, native["r"])
        expected = [s for s in space.network(arch).specs if s.measurable]
        assert [s for s in net.specs if s.measurable] == expected


def _broken(mutate) -> dict:
    cfg = copy.deepcopy(read_netconfig(_config("mobile")))
    mutate(cfg)
    return cfg


@pytest.mark.parametrize(
    "mutate, match",
    [(lambda c: c["blocks"][3].update(mobile_inverted_conv={
        "name": "MBInvertedConvLayer", "in_channels": 24, "out_channels": 32, "kernel_size": 3,
        "stride": 1, "expand_ratio": 3}), "blocks.3 takes 24 channels but receives 32"),
     (lambda c: c["classifier"].update(in_features=1000), "classifier takes 1000 channels"),
     (lambda c: c["first_conv"].update(act_func="swish"), "activation 'swish'"),
     (lambda c: c["blocks"][1]["mobile_inverted_conv"].update(name="DepthConvLayer"),
      "'DepthConvLayer' is not supported"),
     (lambda c: c["blocks"][3]["mobile_inverted_conv"].update(stride=2), "stride 1"),
     (lambda c: c["blocks"][1]["mobile_inverted_conv"].pop("kernel_size"),
      "malformed net.config at blocks.1"),
     (lambda c: c.pop("classifier"), "no 'classifier'"),
     (lambda c: c.pop("first_conv"), "not a net.config"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(stride=0), r"stride must be .* got 0 \(at blocks.2\)"),
     (lambda c: c["first_conv"].update(stride=0), r"stride must be .* got 0 \(at first_conv\)"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(stride=1e308), "stride must be"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(kernel_size=-3), "kernel_size must be"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(kernel_size="3"), "kernel_size must be"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(expand_ratio=float("nan")), "expand_ratio must be"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(expand_ratio=0), "expand_ratio must be"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(expand_ratio=True), "expand_ratio must be"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(mid_channels=10**9), "mid_channels must be"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(out_channels=0), "out_channels must be"),
     (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(use_se="yes"), "use_se must be"),
     (lambda c: c["blocks"][2].update(shortcut=[1]), "shortcut must be"),
     (lambda c: c["classifier"].update(out_features=-1), "out_features must be"),
     (lambda c: c["first_conv"].update(in_channels=10**30), "in_channels must be"),
     (lambda c: c.update(blocks=c["blocks"] * 100), "at most 1000")],
)
def test_malformed_configs(mutate, match):
    with pytest.raises(ArchError, match=match) as info:
        network_from_netconfig(_broken(mutate))
    assert "\n" not in str(info.value)


def test_unreadable_config_files(tmp_path):
    bad = tmp_path / "net.config"
    bad.write_text("{not json")
    with pytest.raises(ArchError, match="not valid JSON"):
        network_from_netconfig(bad)
    with pytest.raises(ArchError, match="cannot read the net.config"):
        network_from_netconfig(tmp_path / "absent.config")
    with pytest.raises(UsageError, match="resolution"):
        network_from_netconfig(_config("mobile"), 8)


def test_is_netconfig():
    assert is_netconfig(read_netconfig(_config("gpu")))
    assert not is_netconfig({"blocks": []})
    assert not is_netconfig({"first_conv": {}, "blocks": None})
    assert not is_netconfig(["first_conv"])


# ---- load_network / load_arch ----


def test_load_network_reads_a_net_config_anywhere():
    path = str(_config("mobile"))
    reference = network_from_netconfig(path).specs
    for space in (None, get_space("proxyless_mobile"), get_space("ofa_mbv3")):
        net, arch = load_network(space, path, None)
        assert net.specs == reference and arch is None  # no space arch builds it exactly
    published = ProxylessMobileSpace(stage_widths=PUBLISHED_WIDTHS)
    net, arch = load_network(published, path, 192)
    assert net.input_shape == (192, 192, 3)
    assert arch is not None and published.network(arch, 192).specs == net.specs
    _, arch2 = load_arch(published, path)
    assert arch2 == arch


def test_load_network_reads_native_forms(tmp_path):
    pm = get_space("proxyless_mobile")
    arch = pm.sample(np.random.default_rng(3))
    ops = pm.arch_to_native(arch)
    as_file = tmp_path / "arch.json"
    as_file.write_text(json.dumps(ops))
    for text in (json.dumps(ops), " ".join(ops), str(as_file)):
        net, got = load_network(pm, text, 160)
        assert got == arch and net.specs == pm.network(arch, 160).specs
    fb = get_space("fbnet")
    fb_arch = fb.sample(np.random.default_rng(3))
    txt = tmp_path / "fbnet.txt"
    txt.write_text(fb.arch_string(fb_arch) + "\n")
    assert load_network(fb, str(txt), None)[1] == fb_arch


def test_load_network_reads_arch_json_envelopes(tmp_path):
    ofa = get_space("ofa_mbv3")
    arch = ofa.sample(np.random.default_rng(9))
    envelope = {"space": "ofa_mbv3", "arch": ofa.arch_to_native(arch), "resolution": 176}
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(envelope))
    net, got = load_network(None, str(path), None)
    assert got == arch and net.input_shape == (176, 176, 3)
    net, _ = load_network(ofa, json.dumps(envelope), 208)  # an explicit resolution wins
    assert net.input_shape == (208, 208, 3)
    with pytest.raises(ArchError, match="of space 'ofa_mbv3', but space 'fbnet'"):
        load_network(get_space("fbnet"), str(path), None)
    with pytest.raises(UnknownNameError):
        load_network(None, json.dumps({"space": "nope", "arch": []}), None)


def test_load_arch_for_a_space_without_lut():
    nb = get_space("nasbench201")
    cell = (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    )
    space, arch = load_arch(nb, cell)
    assert space is nb and nb.arch_to_native(arch) == cell
    space, arch2 = load_arch(None, json.dumps({"space": "nasbench201", "arch": cell}))
    assert space.name == "nasbench201" and arch2 == arch
    with pytest.raises(UsageError, match="no LUT"):
        load_network(nb, cell, None)
    with pytest.raises(ArchError, match="describes a network"):
        load_arch(nb, str(_config("mobile")))


@pytest.mark.parametrize(
    "space_name, text, match",
    [("proxyless_mobile", "", "empty architecture"),
     ("proxyless_mobile", "   ", "empty architecture"),
     ("ofa_mbv3", '{"ks": [3, 5', "not valid JSON"),
     ("ofa_mbv3", "missing/arch.json", "does not exist"),
     ("ofa_mbv3", "arch.json", "does not exist"),
     (None, '["3x3_MBConv3"]', "cannot tell which search space"),
     ("proxyless_mobile", '["3x3_MBConv3"]', r"needs 21 .*expected a list of 21 op names"),
     ("ofa_mbv3", "3x3_MBConv3", "cannot read str; expected OFA's dict"),
     ("fbnet", "k3_e1 " * 21 + "k9_e1", "stage6.block0: 'k9_e1' is not one of"),
     ("nasbench201", "|conv~0|", "node group")],
)
def test_malformed_arch_text(space_name, text, match):
    space = get_space(space_name) if space_name else None
    with pytest.raises(ArchError, match=match) as info:
        load_arch(space, text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change, match", [
    (dict(kernel=0), ">= 1"), (dict(kernel=99), "at most"), (dict(stride=2.5), "integer"),
    (dict(expand_ratio=float("nan")), "expand_ratio"), (dict(expand_ratio=0), "expand_ratio"),
    (dict(mid_channels=10**9), "at most"), (dict(input_shape=(14, 14, 10**7)), "1 to"),
    (dict(input_shape=(14.5, 14, 40)), "three integers"), (dict(input_shape=(True, 14, 40)), "three integers"),
])
def test_opspec_refuses_absurd_fields(change, match):
    from latkit.profiler.ops import Act, OpSpec, OpType

    base = dict(op_type=OpType.MBCONV, input_shape=(14, 14, 40), output_shape=(14, 14, 40), kernel=3,
                stride=1, expand_ratio=3, mid_channels=120, act=Act.RELU6)
    with pytest.raises(UsageError, match=match):
        OpSpec(**{**base, **change})
