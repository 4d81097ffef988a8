"""The Repair family's corpus: reference functions written for LPCA, each with a spec and hidden tests.

Tier 0: a few lines, one idea. Tier 1: a loop with a condition or two. Tier 2:
several branches or a small algorithm. Tests are ``assert`` lines calling the
function by name; they cover the edge cases the spec names, so that seeded
mutants fail at least one of them (the tables keep only mutants that do).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reference:
    name: str
    tier: int
    spec: str
    code: str
    tests: str


def _ref(name: str, tier: int, spec: str, code: str, tests: str) -> Reference:
    return Reference(name, tier, " ".join(spec.split()), textwrap.dedent(code).strip("\n") + "\n",
                     textwrap.dedent(tests).strip("\n") + "\n")  # fmt: skip


CORPUS: tuple[Reference, ...] = (
    # ---------------------------------------------------------------- tier 0
    _ref("clamp", 0, "clamp(x, lo, hi) returns x limited to the closed interval [lo, hi] (lo <= hi).", """
        def clamp(x, lo, hi):
            if x < lo:
                return lo
            if x > hi:
                return hi
            return x
        """, """
        assert clamp(5, 0, 10) == 5
        assert clamp(-3, 0, 10) == 0
        assert clamp(12, 0, 10) == 10
        assert clamp(0, 0, 10) == 0
        assert clamp(10, 0, 10) == 10
        assert clamp(7, 7, 7) == 7
        assert clamp(-5, -10, -1) == -5
        """),
    _ref("sign", 0, "sign(x) returns -1 if x is negative, 1 if x is positive and 0 if x is zero.", """
        def sign(x):
            if x > 0:
                return 1
            if x < 0:
                return -1
            return 0
        """, """
        assert sign(5) == 1
        assert sign(-2) == -1
        assert sign(0) == 0
        assert sign(1) == 1
        assert sign(-1) == -1
        assert sign(10**9) == 1
        """),
    _ref("is_leap_year", 0, """is_leap_year(year) is True for Gregorian leap years: divisible by 4,
        except centuries, which must be divisible by 400.""", """
        def is_leap_year(year):
            if year % 400 == 0:
                return True
            if year % 100 == 0:
                return False
            return year % 4 == 0
        """, """
        assert is_leap_year(2024) is True
        assert is_leap_year(2023) is False
        assert is_leap_year(1900) is False
        assert is_leap_year(2000) is True
        assert is_leap_year(2100) is False
        assert is_leap_year(1996) is True
        assert is_leap_year(1) is False
        """),
    _ref("count_vowels", 0, "count_vowels(s) counts the letters a, e, i, o, u in s, upper or lower case.", """
        def count_vowels(s):
            count = 0
            for ch in s.lower():
                if ch in "aeiou":
                    count += 1
            return count
        """, """
        assert count_vowels("hello") == 2
        assert count_vowels("") == 0
        assert count_vowels("AEIOU") == 5
        assert count_vowels("rhythm") == 0
        assert count_vowels("Banana") == 3
        assert count_vowels("a") == 1
        """),
    _ref("sum_of_squares", 0, "sum_of_squares(n) returns 1*1 + 2*2 + ... + n*n, and 0 for n <= 0.", """
        def sum_of_squares(n):
            total = 0
            for i in range(1, n + 1):
                total += i * i
            return total
        """, """
        assert sum_of_squares(0) == 0
        assert sum_of_squares(1) == 1
        assert sum_of_squares(2) == 5
        assert sum_of_squares(3) == 14
        assert sum_of_squares(10) == 385
        assert sum_of_squares(-4) == 0
        """),
    _ref("last_index", 0, """last_index(xs, target) is the largest index i with xs[i] == target, or
        -1 if none.""",
        """
        def last_index(xs, target):
            for i in range(len(xs) - 1, -1, -1):
                if xs[i] == target:
                    return i
            return -1
        """, """
        assert last_index([1, 2, 3, 2], 2) == 3
        assert last_index([1, 2, 3], 4) == -1
        assert last_index([], 1) == -1
        assert last_index([7], 7) == 0
        assert last_index([5, 5, 5], 5) == 2
        assert last_index([9, 1, 1], 9) == 0
        """),
    _ref("max_of_three", 0, "max_of_three(a, b, c) returns the largest of three numbers.", """
        def max_of_three(a, b, c):
            best = a
            if b > best:
                best = b
            if c > best:
                best = c
            return best
        """, """
        assert max_of_three(1, 2, 3) == 3
        assert max_of_three(3, 2, 1) == 3
        assert max_of_three(1, 3, 2) == 3
        assert max_of_three(-1, -2, -3) == -1
        assert max_of_three(4, 4, 4) == 4
        assert max_of_three(0, 5, 5) == 5
        """),
    _ref("is_palindrome", 0, """is_palindrome(s) is True when s reads the same backwards, ignoring case
        (every character counts, spaces included).""", """
        def is_palindrome(s):
            t = s.lower()
            return t == t[::-1]
        """, """
        assert is_palindrome("Racecar") is True
        assert is_palindrome("hello") is False
        assert is_palindrome("") is True
        assert is_palindrome("a") is True
        assert is_palindrome("Ab") is False
        assert is_palindrome("abBA") is True
        assert is_palindrome("ab a") is False
        """),
    _ref("count_positive", 0, """count_positive(xs) counts the elements of xs that are strictly
        greater than 0.""", """
        def count_positive(xs):
            return sum(1 for x in xs if x > 0)
        """, """
        assert count_positive([1, -2, 3, 0]) == 2
        assert count_positive([]) == 0
        assert count_positive([0, 0]) == 0
        assert count_positive([-1, -5]) == 0
        assert count_positive([4, 5, 6]) == 3
        assert count_positive([1]) == 1
        """),
    _ref("triangle_number", 0, "triangle_number(n) returns 1 + 2 + ... + n for n >= 0 (0 for n = 0).", """
        def triangle_number(n):
            return n * (n + 1) // 2
        """, """
        assert triangle_number(0) == 0
        assert triangle_number(1) == 1
        assert triangle_number(4) == 10
        assert triangle_number(10) == 55
        assert triangle_number(100) == 5050
        """),
    _ref("digit_sum", 0, "digit_sum(n) returns the sum of the decimal digits of an integer n >= 0.", """
        def digit_sum(n):
            total = 0
            while n > 0:
                total += n % 10
                n //= 10
            return total
        """, """
        assert digit_sum(0) == 0
        assert digit_sum(7) == 7
        assert digit_sum(123) == 6
        assert digit_sum(1000) == 1
        assert digit_sum(999) == 27
        assert digit_sum(10) == 1
        """),
    _ref("bounded_sum", 0, "bounded_sum(xs, limit) sums the elements of xs that are at most limit.", """
        def bounded_sum(xs, limit):
            total = 0
            for x in xs:
                if x <= limit:
                    total += x
            return total
        """, """
        assert bounded_sum([1, 5, 10], 5) == 6
        assert bounded_sum([], 3) == 0
        assert bounded_sum([7, 8], 3) == 0
        assert bounded_sum([3, 3, 4], 3) == 6
        assert bounded_sum([-2, 2], 0) == -2
        assert bounded_sum([1, 2, 3], 100) == 6
        """),
    _ref("first_upper", 0, """first_upper(s) is the index of the first uppercase letter in s, or -1
        if there is none.""",
        """
        def first_upper(s):
            for i, ch in enumerate(s):
                if ch.isupper():
                    return i
            return -1
        """, """
        assert first_upper("helloWorld") == 5
        assert first_upper("hello") == -1
        assert first_upper("") == -1
        assert first_upper("Abc") == 0
        assert first_upper("abC") == 2
        assert first_upper("aBC") == 1
        """),
    _ref("average_floor", 0, """average_floor(xs) is the mean of a list of integers rounded down
        (floor division); 0 for an empty list.""", """
        def average_floor(xs):
            if not xs:
                return 0
            return sum(xs) // len(xs)
        """, """
        assert average_floor([1, 2, 3]) == 2
        assert average_floor([]) == 0
        assert average_floor([1, 2]) == 1
        assert average_floor([5]) == 5
        assert average_floor([-1, -2]) == -2
        assert average_floor([10, 20, 31]) == 20
        """),
    _ref("in_range", 0, "in_range(x, lo, hi) is True when lo <= x < hi (the upper bound is excluded).", """
        def in_range(x, lo, hi):
            return lo <= x and x < hi
        """, """
        assert in_range(5, 0, 10) is True
        assert in_range(0, 0, 10) is True
        assert in_range(10, 0, 10) is False
        assert in_range(-1, 0, 10) is False
        assert in_range(9, 0, 10) is True
        assert in_range(3, 3, 3) is False
        """),
    _ref("repeat_join", 0, """repeat_join(s, n, sep) returns n copies of s joined by sep; the empty string
        when n <= 0.""", """
        def repeat_join(s, n, sep):
            if n <= 0:
                return ""
            return sep.join([s] * n)
        """, """
        assert repeat_join("ab", 3, "-") == "ab-ab-ab"
        assert repeat_join("x", 1, ",") == "x"
        assert repeat_join("x", 0, ",") == ""
        assert repeat_join("x", -2, ",") == ""
        assert repeat_join("", 2, "+") == "+"
        assert repeat_join("no", 2, "") == "nono"
        """),
    # ---------------------------------------------------------------- tier 1
    _ref("fizzbuzz", 1, """fizzbuzz(n) returns the list of strings for 1..n: "FizzBuzz" for multiples of
        15, "Fizz" for other multiples of 3, "Buzz" for other multiples of 5, else the number.""", """
        def fizzbuzz(n):
            out = []
            for i in range(1, n + 1):
                if i % 15 == 0:
                    out.append("FizzBuzz")
                elif i % 3 == 0:
                    out.append("Fizz")
                elif i % 5 == 0:
                    out.append("Buzz")
                else:
                    out.append(str(i))
            return out
        """, """
        assert fizzbuzz(0) == []
        assert fizzbuzz(1) == ["1"]
        assert fizzbuzz(5) == ["1", "2", "Fizz", "4", "Buzz"]
        assert fizzbuzz(15)[-1] == "FizzBuzz"
        assert fizzbuzz(15)[9] == "Buzz"
        assert len(fizzbuzz(30)) == 30
        assert fizzbuzz(6)[5] == "Fizz"
        """),
    _ref("running_max", 1, """running_max(xs) returns a list whose i-th element is the maximum of
        xs[0..i]; [] for an empty list.""", """
        def running_max(xs):
            out = []
            best = None
            for x in xs:
                if best is None or x > best:
                    best = x
                out.append(best)
            return out
        """, """
        assert running_max([]) == []
        assert running_max([3]) == [3]
        assert running_max([1, 3, 2, 5, 4]) == [1, 3, 3, 5, 5]
        assert running_max([5, 4, 3]) == [5, 5, 5]
        assert running_max([-2, -1, -3]) == [-2, -1, -1]
        assert running_max([0, 0, 1]) == [0, 0, 1]
        """),
    _ref("count_runs", 1, """count_runs(xs) counts the maximal runs of equal adjacent elements
        ([1, 1, 2, 1] has 3 runs); 0 for an empty list.""", """
        def count_runs(xs):
            if not xs:
                return 0
            runs = 1
            for i in range(1, len(xs)):
                if xs[i] != xs[i - 1]:
                    runs += 1
            return runs
        """, """
        assert count_runs([]) == 0
        assert count_runs([4]) == 1
        assert count_runs([1, 1, 2, 1]) == 3
        assert count_runs([1, 2, 3]) == 3
        assert count_runs([7, 7, 7]) == 1
        assert count_runs([1, 2, 2, 3, 3, 3]) == 3
        """),
    _ref("second_largest", 1, """second_largest(xs) is the second largest distinct value of xs, or None
        when xs has fewer than two distinct values.""", """
        def second_largest(xs):
            first = second = None
            for x in xs:
                if first is None or x > first:
                    if first is not None:
                        second = first
                    first = x
                elif x != first and (second is None or x > second):
                    second = x
            return second
        """, """
        assert second_largest([3, 1, 2]) == 2
        assert second_largest([5, 5, 4]) == 4
        assert second_largest([1]) is None
        assert second_largest([]) is None
        assert second_largest([2, 2]) is None
        assert second_largest([1, 2, 3, 4]) == 3
        assert second_largest([-1, -5, -3]) == -3
        assert second_largest([4, 9, 9, 7]) == 7
        """),
    _ref("rotate_left", 1, """rotate_left(xs, k) returns xs rotated left by k positions (k may exceed the
        length; it wraps around); [] for an empty list.""", """
        def rotate_left(xs, k):
            if not xs:
                return []
            k = k % len(xs)
            return xs[k:] + xs[:k]
        """, """
        assert rotate_left([1, 2, 3, 4], 1) == [2, 3, 4, 1]
        assert rotate_left([1, 2, 3], 0) == [1, 2, 3]
        assert rotate_left([1, 2, 3], 3) == [1, 2, 3]
        assert rotate_left([1, 2, 3], 4) == [2, 3, 1]
        assert rotate_left([], 2) == []
        assert rotate_left([1, 2, 3, 4, 5], 2) == [3, 4, 5, 1, 2]
        """),
    _ref("chunk", 1, """chunk(xs, size) splits xs into consecutive lists of `size` elements; the last one
        may be shorter. size >= 1.""", """
        def chunk(xs, size):
            out = []
            for i in range(0, len(xs), size):
                out.append(xs[i:i + size])
            return out
        """, """
        assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
        assert chunk([], 3) == []
        assert chunk([1, 2, 3], 3) == [[1, 2, 3]]
        assert chunk([1, 2, 3], 1) == [[1], [2], [3]]
        assert chunk([1, 2], 5) == [[1, 2]]
        assert chunk([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]
        """),
    _ref("run_length", 1, """run_length(s) encodes runs of equal characters as the character followed by
        the run's length: "aaabcc" -> "a3b1c2"; "" -> "".""", """
        def run_length(s):
            out = []
            i = 0
            while i < len(s):
                j = i
                while j < len(s) and s[j] == s[i]:
                    j += 1
                out.append(s[i] + str(j - i))
                i = j
            return "".join(out)
        """, """
        assert run_length("") == ""
        assert run_length("a") == "a1"
        assert run_length("aaabcc") == "a3b1c2"
        assert run_length("abc") == "a1b1c1"
        assert run_length("zzzz") == "z4"
        assert run_length("aabbaa") == "a2b2a2"
        """),
    _ref("is_sorted", 1, """is_sorted(xs, strict) is True when xs is in non-decreasing order, or in
        strictly increasing order if strict is True. Empty and one-element lists are sorted.""", """
        def is_sorted(xs, strict):
            for i in range(len(xs) - 1):
                if strict and xs[i] >= xs[i + 1]:
                    return False
                if not strict and xs[i] > xs[i + 1]:
                    return False
            return True
        """, """
        assert is_sorted([1, 2, 2, 3], False) is True
        assert is_sorted([1, 2, 2, 3], True) is False
        assert is_sorted([1, 2, 3], True) is True
        assert is_sorted([3, 1], False) is False
        assert is_sorted([], True) is True
        assert is_sorted([5], False) is True
        assert is_sorted([1, 3, 2], False) is False
        """),
    _ref("index_of_min", 1, """index_of_min(xs) is the index of the first occurrence of the
        minimum; -1 if empty.""",
        """
        def index_of_min(xs):
            if not xs:
                return -1
            best = 0
            for i in range(1, len(xs)):
                if xs[i] < xs[best]:
                    best = i
            return best
        """, """
        assert index_of_min([3, 1, 2]) == 1
        assert index_of_min([]) == -1
        assert index_of_min([5]) == 0
        assert index_of_min([2, 1, 1]) == 1
        assert index_of_min([0, 4, -1]) == 2
        assert index_of_min([7, 7]) == 0
        """),
    _ref("gcd", 1, """gcd(a, b) is the greatest common divisor of two integers a, b >= 0 by Euclid's
        algorithm; gcd(0, 0) is 0.""", """
        def gcd(a, b):
            while b != 0:
                a, b = b, a % b
            return a
        """, """
        assert gcd(12, 18) == 6
        assert gcd(7, 5) == 1
        assert gcd(0, 9) == 9
        assert gcd(9, 0) == 9
        assert gcd(0, 0) == 0
        assert gcd(100, 75) == 25
        """),
    _ref("to_binary", 1, """to_binary(n) returns the binary digits of an integer n >= 0 as a string, without
        a prefix: 5 -> "101", 0 -> "0". Do not use bin().""", """
        def to_binary(n):
            if n == 0:
                return "0"
            digits = []
            while n > 0:
                digits.append(str(n % 2))
                n //= 2
            return "".join(reversed(digits))
        """, """
        assert to_binary(0) == "0"
        assert to_binary(1) == "1"
        assert to_binary(2) == "10"
        assert to_binary(5) == "101"
        assert to_binary(8) == "1000"
        assert to_binary(255) == "11111111"
        """),
    _ref("merge_sorted", 1, "merge_sorted(a, b) merges two sorted lists into one sorted list.", """
        def merge_sorted(a, b):
            out = []
            i = j = 0
            while i < len(a) and j < len(b):
                if a[i] <= b[j]:
                    out.append(a[i])
                    i += 1
                else:
                    out.append(b[j])
                    j += 1
            return out + a[i:] + b[j:]
        """, """
        assert merge_sorted([1, 3, 5], [2, 4]) == [1, 2, 3, 4, 5]
        assert merge_sorted([], [1, 2]) == [1, 2]
        assert merge_sorted([1, 2], []) == [1, 2]
        assert merge_sorted([], []) == []
        assert merge_sorted([1, 1], [1]) == [1, 1, 1]
        assert merge_sorted([5, 6], [1, 2]) == [1, 2, 5, 6]
        """),
    _ref("dedupe", 1, """dedupe(xs) removes repeated elements, keeping the first occurrence of
        each, in order.""", """
        def dedupe(xs):
            seen = set()
            out = []
            for x in xs:
                if x not in seen:
                    seen.add(x)
                    out.append(x)
            return out
        """, """
        assert dedupe([1, 2, 1, 3, 2]) == [1, 2, 3]
        assert dedupe([]) == []
        assert dedupe([4, 4, 4]) == [4]
        assert dedupe([3, 2, 1]) == [3, 2, 1]
        assert dedupe(["b", "a", "b"]) == ["b", "a"]
        """),
    _ref("count_pairs", 1, """count_pairs(xs, target) counts index pairs i < j with xs[i] + xs[j]
        == target.""",
        """
        def count_pairs(xs, target):
            count = 0
            for i in range(len(xs)):
                for j in range(i + 1, len(xs)):
                    if xs[i] + xs[j] == target:
                        count += 1
            return count
        """, """
        assert count_pairs([1, 2, 3, 4], 5) == 2
        assert count_pairs([], 0) == 0
        assert count_pairs([2, 2, 2], 4) == 3
        assert count_pairs([1, 1], 3) == 0
        assert count_pairs([5], 10) == 0
        assert count_pairs([0, -1, 1, 2], 1) == 2
        """),
    _ref("caesar", 1, """caesar(s, k) shifts every lowercase letter of s forward by k places in the
        alphabet, wrapping from z to a; other characters are unchanged.""", """
        def caesar(s, k):
            out = []
            for ch in s:
                if "a" <= ch <= "z":
                    out.append(chr((ord(ch) - ord("a") + k) % 26 + ord("a")))
                else:
                    out.append(ch)
            return "".join(out)
        """, """
        assert caesar("abc", 1) == "bcd"
        assert caesar("xyz", 3) == "abc"
        assert caesar("Hello, world", 1) == "Hfmmp, xpsme"
        assert caesar("", 5) == ""
        assert caesar("abc", 26) == "abc"
        assert caesar("a", 0) == "a"
        """),
    _ref("word_count", 1, """word_count(s) counts the words of s, where words are separated by one or more
        spaces; leading and trailing spaces do not make words.""", """
        def word_count(s):
            count = 0
            in_word = False
            for ch in s:
                if ch == " ":
                    in_word = False
                elif not in_word:
                    in_word = True
                    count += 1
            return count
        """, """
        assert word_count("hello world") == 2
        assert word_count("") == 0
        assert word_count("   ") == 0
        assert word_count("  a  b ") == 2
        assert word_count("one") == 1
        assert word_count("a b c d") == 4
        """),
    # ---------------------------------------------------------------- tier 2
    _ref("binary_search", 2, """binary_search(xs, target) returns an index of target in the sorted list xs,
        or -1 if it is absent.""", """
        def binary_search(xs, target):
            lo, hi = 0, len(xs) - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                if xs[mid] == target:
                    return mid
                if xs[mid] < target:
                    lo = mid + 1
                else:
                    hi = mid - 1
            return -1
        """, """
        assert binary_search([1, 3, 5, 7, 9], 7) == 3
        assert binary_search([1, 3, 5, 7, 9], 1) == 0
        assert binary_search([1, 3, 5, 7, 9], 9) == 4
        assert binary_search([1, 3, 5, 7, 9], 4) == -1
        assert binary_search([], 3) == -1
        assert binary_search([2], 2) == 0
        assert binary_search([1, 2], 2) == 1
        assert binary_search([1, 3, 5, 7, 9], 10) == -1
        """),
    _ref("longest_run_up", 2, """longest_run_up(xs) is the length of the longest strictly increasing run of
        adjacent elements; 0 for an empty list.""", """
        def longest_run_up(xs):
            if not xs:
                return 0
            best = cur = 1
            for i in range(1, len(xs)):
                if xs[i] > xs[i - 1]:
                    cur += 1
                    best = max(best, cur)
                else:
                    cur = 1
            return best
        """, """
        assert longest_run_up([]) == 0
        assert longest_run_up([5]) == 1
        assert longest_run_up([1, 2, 3, 1, 2]) == 3
        assert longest_run_up([3, 2, 1]) == 1
        assert longest_run_up([1, 1, 2]) == 2
        assert longest_run_up([1, 2, 1, 2, 3, 4]) == 4
        """),
    _ref("balanced", 2, """balanced(s) is True when the brackets (), [] and {} in s are balanced and
        properly nested; other characters are ignored.""", """
        def balanced(s):
            pairs = {")": "(", "]": "[", "}": "{"}
            stack = []
            for ch in s:
                if ch in "([{":
                    stack.append(ch)
                elif ch in pairs:
                    if not stack or stack.pop() != pairs[ch]:
                        return False
            return len(stack) == 0
        """, """
        assert balanced("([]{})") is True
        assert balanced("") is True
        assert balanced("(") is False
        assert balanced(")(") is False
        assert balanced("([)]") is False
        assert balanced("a(b)c") is True
        assert balanced("{[()()]}") is True
        assert balanced("())") is False
        """),
    _ref("roman_to_int", 2, """roman_to_int(s) converts a valid Roman numeral (I V X L C D M, with
        subtractive pairs such as IV and XC) to an integer.""", """
        def roman_to_int(s):
            values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
            total = 0
            for i, ch in enumerate(s):
                v = values[ch]
                if i + 1 < len(s) and values[s[i + 1]] > v:
                    total -= v
                else:
                    total += v
            return total
        """, """
        assert roman_to_int("III") == 3
        assert roman_to_int("IV") == 4
        assert roman_to_int("IX") == 9
        assert roman_to_int("LVIII") == 58
        assert roman_to_int("MCMXCIV") == 1994
        assert roman_to_int("I") == 1
        assert roman_to_int("XL") == 40
        """),
    _ref("int_to_roman", 2, """int_to_roman(n) writes 1 <= n <= 3999 as a Roman numeral (IV, IX,
        XL... subtractive).""",
        """
        def int_to_roman(n):
            table = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                     (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
            out = []
            for value, letters in table:
                while n >= value:
                    out.append(letters)
                    n -= value
            return "".join(out)
        """, """
        assert int_to_roman(1) == "I"
        assert int_to_roman(4) == "IV"
        assert int_to_roman(9) == "IX"
        assert int_to_roman(14) == "XIV"
        assert int_to_roman(40) == "XL"
        assert int_to_roman(1994) == "MCMXCIV"
        assert int_to_roman(3999) == "MMMCMXCIX"
        assert int_to_roman(500) == "D"
        """),
    _ref("primes_up_to", 2, """primes_up_to(n) lists the primes <= n in increasing order (sieve);
        [] for n < 2.""", """
        def primes_up_to(n):
            if n < 2:
                return []
            is_prime = [True] * (n + 1)
            is_prime[0] = is_prime[1] = False
            for i in range(2, int(n ** 0.5) + 1):
                if is_prime[i]:
                    for j in range(i * i, n + 1, i):
                        is_prime[j] = False
            return [i for i in range(n + 1) if is_prime[i]]
        """, """
        assert primes_up_to(1) == []
        assert primes_up_to(2) == [2]
        assert primes_up_to(10) == [2, 3, 5, 7]
        assert primes_up_to(30) == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
        assert primes_up_to(0) == []
        assert primes_up_to(25)[-1] == 23
        assert len(primes_up_to(100)) == 25
        """),
    _ref("flatten", 2, """flatten(xs) returns the elements of an arbitrarily nested list in order,
        as a flat list.""",
        """
        def flatten(xs):
            out = []
            for x in xs:
                if isinstance(x, list):
                    out.extend(flatten(x))
                else:
                    out.append(x)
            return out
        """, """
        assert flatten([1, [2, [3, 4]], 5]) == [1, 2, 3, 4, 5]
        assert flatten([]) == []
        assert flatten([[], [[]]]) == []
        assert flatten([1, 2]) == [1, 2]
        assert flatten([[1], [2, [3]]]) == [1, 2, 3]
        """),
    _ref("transpose", 2, """transpose(m) transposes a rectangular matrix given as a list of rows;
        [] for an empty matrix.""", """
        def transpose(m):
            if not m:
                return []
            rows, cols = len(m), len(m[0])
            return [[m[r][c] for r in range(rows)] for c in range(cols)]
        """, """
        assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]
        assert transpose([]) == []
        assert transpose([[1]]) == [[1]]
        assert transpose([[1, 2]]) == [[1], [2]]
        assert transpose([[1], [2]]) == [[1, 2]]
        """),
    _ref("max_subarray", 2, """max_subarray(xs) is the largest sum of a non-empty contiguous slice of xs
        (Kadane's algorithm); 0 for an empty list.""", """
        def max_subarray(xs):
            if not xs:
                return 0
            best = cur = xs[0]
            for x in xs[1:]:
                cur = max(x, cur + x)
                best = max(best, cur)
            return best
        """, """
        assert max_subarray([-2, 1, -3, 4, -1, 2, 1, -5, 4]) == 6
        assert max_subarray([]) == 0
        assert max_subarray([-3, -1, -2]) == -1
        assert max_subarray([5]) == 5
        assert max_subarray([1, 2, 3]) == 6
        assert max_subarray([2, -1, 2]) == 3
        """),
    _ref("spiral", 2, """spiral(m) lists the elements of a rectangular matrix in clockwise spiral
        order from the top left.""",
        """
        def spiral(m):
            out = []
            top, bottom = 0, len(m) - 1
            left, right = 0, (len(m[0]) - 1) if m else -1
            while top <= bottom and left <= right:
                for c in range(left, right + 1):
                    out.append(m[top][c])
                for r in range(top + 1, bottom + 1):
                    out.append(m[r][right])
                if top < bottom and left < right:
                    for c in range(right - 1, left - 1, -1):
                        out.append(m[bottom][c])
                    for r in range(bottom - 1, top, -1):
                        out.append(m[r][left])
                top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
            return out
        """, """
        assert spiral([[1, 2, 3], [4, 5, 6], [7, 8, 9]]) == [1, 2, 3, 6, 9, 8, 7, 4, 5]
        assert spiral([]) == []
        assert spiral([[1]]) == [1]
        assert spiral([[1, 2], [3, 4]]) == [1, 2, 4, 3]
        assert spiral([[1, 2, 3]]) == [1, 2, 3]
        assert spiral([[1], [2], [3]]) == [1, 2, 3]
        assert spiral([[1, 2, 3, 4], [5, 6, 7, 8]]) == [1, 2, 3, 4, 8, 7, 6, 5]
        """),
    _ref("wrap_words", 2, """wrap_words(text, width) greedily packs the words of text (split on spaces) into
        lines of at most width characters, one space between words; a longer word gets a line
        of its own. Returns the list of lines.""", """
        def wrap_words(text, width):
            lines = []
            cur = ""
            for word in text.split():
                if not cur:
                    cur = word
                elif len(cur) + 1 + len(word) <= width:
                    cur = cur + " " + word
                else:
                    lines.append(cur)
                    cur = word
            if cur:
                lines.append(cur)
            return lines
        """, """
        assert wrap_words("the quick brown fox", 10) == ["the quick", "brown fox"]
        assert wrap_words("", 5) == []
        assert wrap_words("a b c", 3) == ["a b", "c"]
        assert wrap_words("hello", 3) == ["hello"]
        assert wrap_words("ab cd", 5) == ["ab cd"]
        assert wrap_words("ab cd", 4) == ["ab", "cd"]
        """),
    _ref("parse_duration", 2, """parse_duration(s) converts a duration such as "1h30m15s", "45m" or "2h5s"
        (hours h, minutes m, seconds s, each at most once, in that order) to seconds.""", """
        def parse_duration(s):
            total = 0
            number = 0
            units = {"h": 3600, "m": 60, "s": 1}
            for ch in s:
                if ch.isdigit():
                    number = number * 10 + int(ch)
                else:
                    total += number * units[ch]
                    number = 0
            return total
        """, """
        assert parse_duration("1h30m15s") == 5415
        assert parse_duration("45m") == 2700
        assert parse_duration("2h5s") == 7205
        assert parse_duration("10s") == 10
        assert parse_duration("1h") == 3600
        assert parse_duration("") == 0
        assert parse_duration("12m3s") == 723
        """),
    _ref("valid_ipv4", 2, """valid_ipv4(s) is True for a dotted-quad IPv4 address: four decimal numbers
        0..255 separated by dots, no leading zeros (except "0" itself), nothing else.""", """
        def valid_ipv4(s):
            parts = s.split(".")
            if len(parts) != 4:
                return False
            for p in parts:
                if not p.isdigit():
                    return False
                if len(p) > 1 and p[0] == "0":
                    return False
                if int(p) > 255:
                    return False
            return True
        """, """
        assert valid_ipv4("192.168.0.1") is True
        assert valid_ipv4("0.0.0.0") is True
        assert valid_ipv4("255.255.255.255") is True
        assert valid_ipv4("256.1.1.1") is False
        assert valid_ipv4("1.2.3") is False
        assert valid_ipv4("01.2.3.4") is False
        assert valid_ipv4("1.2.3.a") is False
        assert valid_ipv4("1..2.3") is False
        assert valid_ipv4("1.2.3.4.5") is False
        """),
    _ref("histogram", 2, """histogram(words) maps each word to how many times it occurs, ignoring case
        (keys are lowercase).""", """
        def histogram(words):
            counts = {}
            for w in words:
                key = w.lower()
                counts[key] = counts.get(key, 0) + 1
            return counts
        """, """
        assert histogram(["a", "b", "a"]) == {"a": 2, "b": 1}
        assert histogram([]) == {}
        assert histogram(["X", "x"]) == {"x": 2}
        assert histogram(["one"]) == {"one": 1}
        assert histogram(["b", "B", "b", "c"]) == {"b": 3, "c": 1}
        """),
    _ref("look_and_say", 2, """look_and_say(n) is the n-th term (n >= 1) of the look-and-say sequence
        1, 11, 21, 1211, 111221, ... as a string.""", """
        def look_and_say(n):
            term = "1"
            for _ in range(n - 1):
                out = []
                i = 0
                while i < len(term):
                    j = i
                    while j < len(term) and term[j] == term[i]:
                        j += 1
                    out.append(str(j - i) + term[i])
                    i = j
                term = "".join(out)
            return term
        """, """
        assert look_and_say(1) == "1"
        assert look_and_say(2) == "11"
        assert look_and_say(3) == "21"
        assert look_and_say(4) == "1211"
        assert look_and_say(5) == "111221"
        assert look_and_say(6) == "312211"
        """),
    _ref("pascal_row", 2, """pascal_row(n) is row n (n >= 0) of Pascal's triangle: pascal_row(3) ==
        [1, 3, 3, 1].""", """
        def pascal_row(n):
            row = [1]
            for _ in range(n):
                nxt = [1]
                for i in range(1, len(row)):
                    nxt.append(row[i - 1] + row[i])
                nxt.append(1)
                row = nxt
            return row
        """, """
        assert pascal_row(0) == [1]
        assert pascal_row(1) == [1, 1]
        assert pascal_row(2) == [1, 2, 1]
        assert pascal_row(3) == [1, 3, 3, 1]
        assert pascal_row(5) == [1, 5, 10, 10, 5, 1]
        """),
)

BY_NAME = {r.name: r for r in CORPUS}
assert len(BY_NAME) == len(CORPUS), "reference names must be unique"
