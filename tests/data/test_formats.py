"""The format registry (ssd_fast.data.dataset): one registration per format gives the spec
parser its arguments, options, usage line and help, and the dataset its value checks."""
import inspect

import pytest

from ssd_fast.data import (FORMATS, DetectionDataset, Option, SyntheticDataset, build_dataset, formats_help,
                           parse_spec, register_format)


def test_builtin_formats_and_their_usage_lines():
    assert {name: f.usage for name, f in FORMATS.items()} == {
        "synthetic": "synthetic[:seed=S,n=N,size=PX,split=train|test]",
        "voc": "voc:ROOT[,year=2007,split=test]",
        "coco": "coco:IMAGES_DIR,ANNOTATIONS_JSON"}
    for name, f in FORMATS.items():
        assert issubclass(f.builder, DetectionDataset) and f.builder.spec_format is f and f.help
        parameters = inspect.signature(f.builder).parameters
        assert f.defaults == {o.name: parameters[o.name].default for o in f.options}
        with pytest.raises(ValueError, match=f"expected {f.usage}".replace("[", r"\[").replace("|", r"\|")):
            parse_spec(f"{name}:" + ",".join(["a"] * (len(f.positional) + 1)))
    text = formats_help()
    assert all(f.usage in text for f in FORMATS.values()) and "size: image side in pixels (default 160)" in text


@pytest.mark.parametrize("kwargs, spec, match", [
    (dict(n=0), "synthetic:n=0", r"synthetic: n must be an integer in \[1, 2147483647\], got 0"),
    (dict(size=True), None, r"synthetic: size must be an integer in \[32, 8192\], got True"),
    (dict(seed=-1, split="val"), "synthetic:seed=-1,split=val", r"synthetic: split must be one of"),
])
def test_a_spec_and_a_direct_call_are_checked_alike(kwargs, spec, match):
    with pytest.raises(ValueError, match=match):
        SyntheticDataset(**kwargs)
    if spec:
        with pytest.raises(ValueError, match=match):
            build_dataset(spec)


def test_build_defaults_fill_only_the_formats_options():
    ds = build_dataset("synthetic:size=64,n=2", n=5, year=2012, split="test")
    assert (len(ds), ds.size, ds.split) == (2, 64, "test")


class _Names(DetectionDataset):
    classes = ("__background__", "x")

    def __init__(self, name, k: int = 1):
        self.spec_format.check(k=k)
        self.name, self.k = name, k

    def __len__(self):
        return self.k

    def __getitem__(self, index):
        raise NotImplementedError

    @property
    def files(self):
        return (self.name,)


def test_a_new_format_is_one_registration():
    toy = register_format("toy", positional=("NAME",), options=(Option("k", int, "how many", range=(1, 3)),),
                          help="a test format")(_Names)
    try:
        assert FORMATS["toy"].usage == "toy:NAME[,k=1]" and "toy:NAME[,k=1]: a test format" in formats_help()
        ds = build_dataset("toy:here,k=2")
        assert isinstance(ds, toy) and (ds.name, len(ds), ds.files, ds.image_id(1)) == ("here", 2, ("here",), 1)
        assert ds.cache() is ds
        assert parse_spec("toy:a") == ("toy", ["a"], {})
        with pytest.raises(ValueError, match=r"toy: k must be an integer in \[1, 3\], got 4"):
            build_dataset("toy:a,k=4")
        with pytest.raises(ValueError, match=r"k must be an integer, got 'x'"):
            build_dataset("toy:a,k=x")
        with pytest.raises(ValueError, match=r"unknown option 'j' for toy; known: \['k'\]"):
            build_dataset("toy:a,j=1")
        with pytest.raises(ValueError, match=r"expected toy:NAME\[,k=1\]"):
            build_dataset("toy")
        with pytest.raises(ValueError, match="registered already"):
            register_format("toy")(_Names)
    finally:
        del FORMATS["toy"]
    with pytest.raises(ValueError, match="unknown kind 'toy'"):
        build_dataset("toy:a")


def test_registration_refuses_what_the_parser_could_not_build():
    with pytest.raises(TypeError, match="option 'name' is not a keyword parameter of _Names with a default"):
        register_format("bad", options=(Option("name"),))(_Names)
    with pytest.raises(TypeError, match="is not a DetectionDataset"):
        register_format("bad")(dict)
    with pytest.raises(TypeError, match="type must be int or str"):
        Option("f", float)
    assert "bad" not in FORMATS


def test_the_contract_is_enforced():
    class NoFiles(DetectionDataset):
        def __len__(self):
            return 0

        def __getitem__(self, index):
            raise IndexError(index)

    with pytest.raises(TypeError, match="abstract"):
        NoFiles()
