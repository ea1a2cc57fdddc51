"""The standard record filter on a table of tricky cases."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from wxhelper.phone import MIN_DIGITS, _find, find_phone_numbers, has_phone_number, mask_phone_numbers

ACCEPTED = [
    ("电话13812345678", "+8613812345678"),
    ("联系：138 1234 5678", "+8613812345678"),
    ("联系 138-1234-5678 王先生", "+8613812345678"),
    ("+86 13912345678", "+8613912345678"),
    ("+86-139-1234-5678", "+8613912345678"),
    ("0086 13712345678", "+8613712345678"),
    ("手机：15012345678，微信同号", "+8615012345678"),
    ("19912345678", "+8619912345678"),
    ("16612345678", "+8616612345678"),
    ("17712345678", "+8617712345678"),
    ("全角１３８１２３４５６７８", "+8613812345678"),
    ("座机 010-12345678", "+861012345678"),
    ("座机 (010) 12345678", "+861012345678"),
    ("（021）6234 5678 张经理", "+862162345678"),
    ("0755-88886666", "+8675588886666"),
    ("0571 8765 4321", "+8657187654321"),
    ("+86 10 1234 5678", "+861012345678"),
]

REJECTED = [
    "订单号 2023061513812345678",  # inside a longer digit run
    "时间戳 169020000013812345678",
    "1381234567",  # ten digits
    "138123456789",  # twelve digits
    "12345678901",  # invalid prefix 12
    "11012345678",  # invalid prefix 11
    "10086",  # service number, not a personal line
    "88886666",  # landline without an area code
    "价格 13.8 万，12345 公里",
    "身份证 110101199003071234",
    "QQ 123456789",
    "没有电话，私聊",
    "",
]


@pytest.mark.parametrize("text, e164", ACCEPTED)
def test_valid_numbers_are_found(text, e164):
    assert find_phone_numbers(text) == [e164]
    assert has_phone_number(text)


@pytest.mark.parametrize("text", REJECTED)
def test_non_numbers_are_rejected(text):
    assert find_phone_numbers(text) == []
    assert not has_phone_number(text)


def test_several_numbers_in_order_without_duplicates():
    text = "卖车 13812345678 或 010-12345678，再说一遍 138 1234 5678"
    assert find_phone_numbers(text) == ["+8613812345678", "+861012345678"]


def test_masking_hides_the_middle_digits():
    masked = mask_phone_numbers("联系 13812345678 或 010-12345678")
    assert "13812345678" not in masked and "12345678" not in masked.replace("138****5678", "")
    assert "138****5678" in masked


SHORT_NUMBERS = ["+86 10 123456", "010-123456", "138 1234", "+86 138", "０１０-１２３"]
"""Texts whose digits are too few for any number (they skip libphonenumber's matcher)."""


@pytest.mark.parametrize("text", SHORT_NUMBERS)
def test_texts_with_too_few_digits_hold_no_number_by_the_matcher_either(text):
    assert _find(text) == ()
    assert find_phone_numbers(text) == []


def test_every_accepted_number_has_enough_digits_for_the_shortcut():
    # The shortcut's premise, on the accepted table and the shortest numbers libphonenumber calls valid.
    for text, _e164 in ACCEPTED:
        assert sum(ch.isdecimal() for ch in text) >= MIN_DIGITS
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    assert min(metadata.fixed_line.possible_length + metadata.mobile.possible_length) >= MIN_DIGITS


@hsettings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789０１２３４５６７８９+-() （）电话号码abc ,.#\n٣"), max_size=40))
def test_the_digit_shortcut_never_changes_an_answer(text):
    # Whatever the text, the answer is libphonenumber's (the shortcut only skips texts it would reject).
    assert find_phone_numbers(text) == list(_find(text))
