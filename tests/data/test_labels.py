import pytest

from sermo.data.labels import IEMOCAP_CODES, LabelSpace, get_label_space


def test_iemocap_4_merges_excited_and_drops_the_rest():
    s = get_label_space("iemocap-4")
    assert s.classes == ("neutral", "happy", "angry", "sad")
    assert s.index_of("exc") == s.index_of("hap") == 1
    assert [s.index_of(c) for c in ("fru", "xxx", "oth", None)] == [-1, -1, -1, -1]
    assert s.indices(["neu", "ang", "xxx"]).tolist() == [0, 2, -1]


def test_iemocap_5_and_msp_codes_share_classes():
    s = get_label_space("iemocap-5")
    assert s.classes == ("neutral", "angry", "happy", "sad", "disgust")
    assert s.index_of("dis") == s.index_of("D") == 4
    assert s.index_of("A") == s.index_of("ang") == 1
    assert all(s.index_of(c) >= -1 for c in IEMOCAP_CODES)


def test_iemocap_5_keeps_excited_out_of_happy():
    # paper 002 (section 3.1) names five classes and no merge: excited is not happy there
    s = get_label_space("iemocap-5")
    assert s.index_of("hap") == 2 and s.index_of("exc") == -1
    assert get_label_space("msp-5").index_of("H") == 2


def test_roundtrip_and_errors():
    s = get_label_space("msp-8")
    assert LabelSpace.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="known: iemocap-4"):
        get_label_space("iemocap-6")
    assert LabelSpace.from_codes(["b", "a", None, "a"]).classes == ("a", "b")
