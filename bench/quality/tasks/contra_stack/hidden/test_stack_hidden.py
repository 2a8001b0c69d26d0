"""Hidden suite for the contradictory `stack` task.

`test_pop_on_empty_returns_none` and `test_pop_on_empty_raises_index_error`
expect incompatible behaviour from the same call: no implementation passes
both.
"""

import unittest

from stack import Stack


class StackTest(unittest.TestCase):
    def test_last_in_first_out(self):
        s = Stack()
        s.push(1)
        s.push(2)
        self.assertEqual(s.pop(), 2)
        self.assertEqual(s.pop(), 1)

    def test_peek_leaves_the_size(self):
        s = Stack()
        s.push("a")
        s.push("b")
        self.assertEqual(s.peek(), "b")
        self.assertEqual(len(s), 2)

    def test_is_empty(self):
        s = Stack()
        self.assertIs(s.is_empty(), True)
        s.push(None)
        self.assertIs(s.is_empty(), False)

    def test_len_and_clear(self):
        s = Stack()
        for i in range(5):
            s.push(i)
        s.pop()
        self.assertEqual(len(s), 4)
        s.clear()
        self.assertEqual(len(s), 0)

    def test_peek_on_empty_returns_none(self):
        self.assertIsNone(Stack().peek())

    def test_pop_on_empty_returns_none(self):
        s = Stack()
        self.assertIsNone(s.pop())

    def test_pop_on_empty_raises_index_error(self):
        s = Stack()
        with self.assertRaises(IndexError) as caught:
            s.pop()
        self.assertEqual(str(caught.exception), "pop from empty stack")

    def test_stacks_are_independent(self):
        a, b = Stack(), Stack()
        a.push(1)
        self.assertEqual(len(b), 0)


if __name__ == "__main__":
    unittest.main()
