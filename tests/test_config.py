"""Typed config: base inheritance, overrides, schema checks, saving."""
import pytest
import yaml

from gclreid.config import Config, ConfigError, load_config, save_config


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_are_the_schema():
    cfg = load_config()
    assert cfg.model.arch == Config().model.arch
    assert cfg.data.height == 256 and cfg.data.width == 128


def test_base_inheritance_and_override_order(tmp_path):
    write(tmp_path / "base.yaml", "data:\n  height: 128\n  width: 64\nmodel:\n  arch: resnet18\n")
    write(tmp_path / "mid.yaml", "_base_: base.yaml\nmodel:\n  arch: resnet34\n  embed_dim: 256\n")
    child = write(tmp_path / "child.yaml", "_base_: mid.yaml\neval:\n  flip: true\n")
    cfg = load_config(child, ["model.embed_dim=128", "data.options.include_val=false"])
    assert cfg.data.height == 128 and cfg.data.width == 64  # from the grandparent
    assert cfg.model.arch == "resnet34"  # child-most file wins over base
    assert cfg.model.embed_dim == 128  # command line wins over files
    assert cfg.eval.flip is True
    assert cfg.data.options["include_val"] is False


def test_shipped_base_config_resolves_by_name(tmp_path):
    child = write(tmp_path / "exp.yaml", "_base_: base.yaml\nrun:\n  seed: 7\n")
    cfg = load_config(child)
    assert cfg.run.seed == 7 and cfg.model.pretrained is True


def test_override_types_are_checked():
    with pytest.raises(ConfigError, match="height"):
        load_config(None, ["data.height=tall"])


def test_unknown_key_is_an_error_naming_it(tmp_path):
    bad = write(tmp_path / "bad.yaml", "model:\n  archh: resnet50\n")
    with pytest.raises(ConfigError, match="archh"):
        load_config(bad)
    with pytest.raises(ConfigError, match="nosuch"):
        load_config(None, ["eval.nosuch=1"])


def test_malformed_override_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["data.height"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    child = write(tmp_path / "c.yaml", "_base_: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(child)


def test_inheritance_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path / "l.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="YAML"):
        load_config(write(tmp_path / "y.yaml", "data: [unclosed\n"))


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["model.arch=resnet18", "run.seed=3"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["arch"] == "resnet18" and saved["run"]["seed"] == 3
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg


def test_every_shipped_config_loads():
    from gclreid.config import PACKAGE_CONFIGS
    names = sorted(p.name for p in PACKAGE_CONFIGS.glob("*.yaml"))
    assert len(names) > 30
    for name in names:
        load_config(PACKAGE_CONFIGS / name)  # raises on an unknown key or a broken _base_ chain


@pytest.mark.parametrize("source,target", [("dukemtmc", "market1501"), ("market1501", "dukemtmc")])
def test_domain_adaptive_gcl_configs_chain_source_to_target(source, target):
    from gclreid.config import PACKAGE_CONFIGS
    supervised = load_config(PACKAGE_CONFIGS / f"supervised_{source}.yaml")
    stage1 = load_config(PACKAGE_CONFIGS / f"uda_stage1_{source}_to_{target}.yaml")
    stage2 = load_config(PACKAGE_CONFIGS / f"gcl_stage2_{source}_to_{target}.yaml")
    stage3 = load_config(PACKAGE_CONFIGS / f"gcl_{source}_to_{target}.yaml")
    assert supervised.data.name == source and {stage1.data.name, stage2.data.name, stage3.data.name} == {target}
    # each stage starts from the previous one's last checkpoint
    assert stage1.train.init == f"{supervised.run.out}/last.pt"
    assert stage2.train.init == f"{stage1.run.out}/last.pt"
    assert stage3.gcl.init == f"{stage2.run.out}/last.pt"
    assert (stage1.train.method, stage2.gcl.stage, stage3.gcl.stage) == ("cluster_contrast", 2, 3)
    # and the GCL stages are the target's fully unsupervised ones apart from the initialisation
    plain = load_config(PACKAGE_CONFIGS / f"gcl_{target}.yaml")
    assert stage3.generator == plain.generator and stage3.cluster == plain.cluster and stage3.optim == plain.optim


def test_a_mistyped_override_is_blamed_not_the_yaml_file(tmp_path):
    cfg_file = write(tmp_path / "exp.yaml", "train:\n  epochs: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cfg_file, ["train.epoch=4"])
    message = str(caught.value)
    assert message.startswith("override 'train.epoch=4' does not fit the config schema") and "epoch" in message
    assert str(cfg_file) not in message and "\n" not in message  # no omegaconf full_key/object_type lines
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "bad.yaml", "train:\n  epoch: 3\n"))
    assert str(tmp_path / "bad.yaml") in str(caught.value) and "\n" not in str(caught.value)


def test_validate_config_names_every_bad_value_in_one_line():
    from gclreid.config import validate_config
    with pytest.raises(ConfigError) as caught:
        validate_config(load_config(None, ["optim.lr=-1", "train.epochs=0", "data.width=0"]))
    message = str(caught.value)
    assert "optim.lr=-1.0" in message and "train.epochs=0" in message and "data.width=0" in message
    assert "\n" not in message
    # Adam at an absurd-but-possible rate is a warning, not an error
    assert any("very large for Adam" in w for w in validate_config(load_config(None, ["optim.lr=0.5"])))


def test_validate_config_checks_nesterov():
    from gclreid.config import validate_config
    with pytest.raises(ConfigError, match=r"optim.nesterov=true needs optim.name=sgd \(got 'adam'\)"):
        validate_config(load_config(None, ["optim.name=adam", "optim.nesterov=true"]))
    with pytest.raises(ConfigError, match=r"optim.nesterov=true needs optim.momentum > 0 \(got 0.0\)"):
        validate_config(load_config(None, ["optim.name=sgd", "optim.momentum=0", "optim.nesterov=true"]))
    assert validate_config(load_config(None, ["optim.name=sgd", "optim.nesterov=true"])) == []
    warnings = validate_config(load_config(None, ["train.method=dgnet", "optim.name=sgd", "optim.nesterov=true"]))
    assert any("dgnet.nesterov" in w for w in warnings)


def test_an_empty_override_empties_a_text_setting():
    cfg = load_config("configs/gcl_market1501_mbv2.yaml", ["gcl.init=", "train.init=runs/x/last.pt"])
    assert cfg.gcl.init == "" and cfg.train.init == "runs/x/last.pt"
    with pytest.raises(ConfigError, match="train.epochs="):
        load_config(None, ["train.epochs="])  # not text: still an error naming the override


def test_a_key_repeated_in_a_yaml_file_is_an_error_not_a_silent_loss(tmp_path):
    # PyYAML keeps the last copy: the first `train:` block (epochs, method) would vanish without a word
    f = tmp_path / "twice.yaml"
    f.write_text("train:\n  epochs: 10\n  method: tmp\noptim:\n  lr: 0.01\ntrain:\n  batch_size: 32\n")
    with pytest.raises(ConfigError, match=r"twice.yaml is not valid YAML: key 'train' appears twice .*line 1.*line 6") as info:
        load_config(f)
    assert "\n" not in str(info.value)  # one line, where PyYAML's own message quotes the text over several
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  epochs: 10\n  epochs: 20\n")
    with pytest.raises(ConfigError, match="key 'epochs' appears twice"):
        load_config(nested)


def test_bad_base_entries_and_unparsable_override_values_are_config_errors(tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text("_base_: [5]\n")
    with pytest.raises(ConfigError, match=r"b.yaml: _base_ must be a file name or a list of file names, got \[5\]"):
        load_config(f)
    for override in (r"data.options.pattern=[0-9]+_c(?P<camid>\d)", "data.options.x={a"):
        with pytest.raises(ConfigError, match="its value is not valid YAML .*quote it") as info:
            load_config(None, [override])
        assert "\n" not in str(info.value)
    # quoted, the same pattern is a string
    cfg = load_config(None, [r"data.options.pattern='[0-9]+_c(?P<camid>\d)'"])
    assert cfg.data.options.pattern == r"[0-9]+_c(?P<camid>\d)"


def test_gcl_angles_must_name_novel_views():
    from gclreid.config import validate_config
    for bad in ("[]", "[0,90]", "[45,360]"):
        with pytest.raises(ConfigError, match=r"gcl.angles=.* must be a non-empty list of whole degrees in 1..359"):
            validate_config(load_config(None, ["train.method=gcl", f"gcl.angles={bad}"]))
    assert validate_config(load_config(None, ["train.method=gcl", "gcl.angles=[45,90]"])) == []
