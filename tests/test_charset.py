import pytest

from beam_preprocess.contract.charset import GB2312_LEVEL1_SIZE, Charset, gb2312_level1


def test_gb2312_level1_in_code_order():
    chars = gb2312_level1()
    assert len(chars) == GB2312_LEVEL1_SIZE == 3755
    assert chars[:3] == ["啊", "阿", "埃"] and chars[-1] == "座"
    codes = [c.encode("gb2312") for c in chars]
    assert codes == sorted(codes)


def test_file_round_trip_and_hash(tmp_path):
    cs = Charset(["中", "a", "，"])
    path = tmp_path / "charset.txt"
    cs.save(str(path))
    assert path.read_bytes() == "中\na\n，\n".encode("utf-8")
    loaded = Charset.load(str(path))
    assert loaded == cs and loaded.sha256() == cs.sha256()
    assert loaded.encode("a中") == [1, 0]


def test_bad_charset_files(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("中\nab\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: expected one character"):
        Charset.load(str(path))
    with pytest.raises(ValueError, match="duplicate characters: '中'"):
        Charset(["中", "国", "中"])


def test_from_data_orders_by_code():
    cs = Charset.from_data("宬安啊安")
    # GBK-only 宬 (0x8C.. in GB18030 byte order) sorts before level-1 啊 (0xB0A1) and 安 (0xB0B2)
    assert cs.chars == ["宬", "啊", "安"]
    assert Charset.from_data("宬安啊", order="unicode").chars == sorted("宬安啊")


def test_named_line_charset_covers_symbols():
    cs = Charset.named("gb2312-1+lines")
    assert len(cs) > 3755
    for c in "09azAZ,.，。":
        assert c in cs
    with pytest.raises(ValueError, match="unknown charset"):
        Charset.named("no-such-set")


def test_unknown_character_error_names_it():
    with pytest.raises(KeyError, match="'x'"):
        Charset(["中"]).encode("中x")
