"""Hidden acceptance suite for the `bank` package."""

import unittest

from bank import AccountClosed, Bank, InsufficientFunds, UnknownAccount

BAD_AMOUNTS = [0, -5, 2.5, True, "10", None]


class BankTest(unittest.TestCase):
    def setUp(self):
        self.bank = Bank()

    def two_accounts(self):
        a = self.bank.open_account("Ada", 1000)
        b = self.bank.open_account("Bob", 200)
        return a, b

    def assertValueError(self, message, call, *args):
        with self.assertRaises(ValueError) as caught:
            call(*args)
        self.assertEqual(str(caught.exception), message)

    # opening

    def test_ids_in_order_of_opening(self):
        self.assertEqual(self.bank.open_account("Ada"), "ACC-0001")
        self.assertEqual(self.bank.open_account("Bob"), "ACC-0002")
        self.assertEqual(self.bank.open_account("Ada"), "ACC-0003")

    def test_banks_are_independent(self):
        self.bank.open_account("Ada", 50)
        other = Bank()
        self.assertEqual(other.open_account("Cy"), "ACC-0001")
        self.assertEqual(other.total(), 0)
        self.assertEqual(other.accounts(), ["ACC-0001"])

    def test_open_with_initial_deposit(self):
        a = self.bank.open_account("Ada", 500)
        self.assertEqual(self.bank.balance(a), 500)
        self.assertEqual(self.bank.history(a), [("deposit", 500)])
        b = self.bank.open_account("Bob", 1)
        self.assertEqual(self.bank.history(b), [("deposit", 1)])

    def test_open_without_initial_deposit(self):
        a = self.bank.open_account("Ada")
        self.assertEqual(self.bank.balance(a), 0)
        self.assertEqual(self.bank.history(a), [])
        b = self.bank.open_account("Bob", 0)
        self.assertEqual(self.bank.history(b), [])

    def test_invalid_initial_balance(self):
        for bad in [-1, 1.5, True, "5"]:
            with self.subTest(initial=bad):
                self.assertValueError("initial balance must be a non-negative integer",
                                      self.bank.open_account, "Ada", bad)
        self.assertEqual(self.bank.accounts(), [])
        self.assertEqual(self.bank.open_account("Ada"), "ACC-0001")

    def test_empty_owner(self):
        for owner in ["", "   "]:
            self.assertValueError("owner must not be empty", self.bank.open_account, owner)
        self.assertEqual(self.bank.open_account("Ada"), "ACC-0001")

    # deposits and withdrawals

    def test_deposit(self):
        a = self.bank.open_account("Ada")
        self.bank.deposit(a, 250)
        self.bank.deposit(a, 1)
        self.assertEqual(self.bank.balance(a), 251)
        self.assertEqual(self.bank.history(a), [("deposit", 250), ("deposit", 1)])

    def test_withdraw(self):
        a = self.bank.open_account("Ada", 1000)
        self.bank.withdraw(a, 300)
        self.assertEqual(self.bank.balance(a), 700)
        self.bank.withdraw(a, 700)
        self.assertEqual(self.bank.balance(a), 0)
        self.assertEqual(self.bank.history(a), [("deposit", 1000), ("withdraw", 300), ("withdraw", 700)])

    def test_withdraw_more_than_the_balance(self):
        a = self.bank.open_account("Ada", 500)
        with self.assertRaises(InsufficientFunds) as caught:
            self.bank.withdraw(a, 501)
        self.assertEqual(str(caught.exception), "ACC-0001 has only 500")
        self.assertEqual(self.bank.balance(a), 500)
        self.assertEqual(self.bank.history(a), [("deposit", 500)])

    def test_invalid_amounts(self):
        a, b = self.two_accounts()
        for bad in BAD_AMOUNTS:
            with self.subTest(amount=bad):
                self.assertValueError("amount must be a positive integer", self.bank.deposit, a, bad)
                self.assertValueError("amount must be a positive integer", self.bank.withdraw, a, bad)
                self.assertValueError("amount must be a positive integer", self.bank.transfer, a, b, bad)
        self.assertEqual((self.bank.balance(a), self.bank.balance(b)), (1000, 200))
        self.assertEqual(len(self.bank.history(a)), 1)

    # transfers

    def test_transfer(self):
        a, b = self.two_accounts()
        self.bank.transfer(a, b, 300)
        self.assertEqual(self.bank.balance(a), 700)
        self.assertEqual(self.bank.balance(b), 500)
        self.assertEqual(self.bank.history(a), [("deposit", 1000), ("transfer_out", 300)])
        self.assertEqual(self.bank.history(b), [("deposit", 200), ("transfer_in", 300)])

    def test_transfer_the_whole_balance(self):
        a, b = self.two_accounts()
        self.bank.transfer(b, a, 200)
        self.assertEqual((self.bank.balance(a), self.bank.balance(b)), (1200, 0))

    def test_transfer_more_than_the_balance(self):
        a, b = self.two_accounts()
        with self.assertRaises(InsufficientFunds) as caught:
            self.bank.transfer(b, a, 201)
        self.assertEqual(str(caught.exception), "ACC-0002 has only 200")
        self.assertEqual((self.bank.balance(a), self.bank.balance(b)), (1000, 200))
        self.assertEqual(self.bank.history(a), [("deposit", 1000)])
        self.assertEqual(self.bank.history(b), [("deposit", 200)])

    def test_transfer_to_the_same_account(self):
        a, _ = self.two_accounts()
        self.assertValueError("cannot transfer to the same account", self.bank.transfer, a, a, 10)
        self.assertEqual(self.bank.balance(a), 1000)
        self.assertEqual(self.bank.history(a), [("deposit", 1000)])

    def test_transfers_keep_the_total(self):
        a, b = self.two_accounts()
        c = self.bank.open_account("Cy")
        self.assertEqual(self.bank.total(), 1200)
        self.bank.transfer(a, c, 400)
        self.bank.transfer(c, b, 100)
        self.assertEqual(self.bank.total(), 1200)
        self.bank.withdraw(b, 50)
        self.bank.deposit(c, 7)
        self.assertEqual(self.bank.total(), 1157)

    # unknown accounts and history

    def test_unknown_account(self):
        a = self.bank.open_account("Ada", 100)
        self.assertTrue(issubclass(UnknownAccount, KeyError))
        calls = [
            (self.bank.balance, "ACC-0009"), (self.bank.history, "ACC-0009"),
            (self.bank.deposit, "ACC-0009", 5), (self.bank.withdraw, "ACC-0009", 5),
            (self.bank.transfer, "ACC-0009", a, 5), (self.bank.transfer, a, "ACC-0009", 5),
            (self.bank.close_account, "ACC-0009"),
        ]
        for call, *args in calls:
            with self.subTest(call=call.__name__, args=args):
                with self.assertRaises(UnknownAccount):
                    call(*args)
        self.assertEqual(self.bank.balance(a), 100)
        self.assertEqual(self.bank.history(a), [("deposit", 100)])

    def test_history_is_a_copy(self):
        a = self.bank.open_account("Ada", 100)
        self.bank.history(a).append(("deposit", 999))
        self.bank.history(a).clear()
        self.assertEqual(self.bank.history(a), [("deposit", 100)])

    # closing

    def test_close_an_empty_account(self):
        a, b = self.two_accounts()
        self.bank.withdraw(a, 1000)
        self.bank.close_account(a)
        self.assertEqual(self.bank.accounts(), [b])
        self.assertEqual(self.bank.balance(a), 0)
        self.assertEqual(self.bank.history(a), [("deposit", 1000), ("withdraw", 1000)])

    def test_close_an_account_with_money(self):
        a, _ = self.two_accounts()
        self.assertValueError("balance must be zero to close", self.bank.close_account, a)
        self.assertIn(a, self.bank.accounts())
        self.bank.deposit(a, 1)
        self.assertEqual(self.bank.balance(a), 1001)

    def test_closed_account_refuses_operations(self):
        a, b = self.two_accounts()
        c = self.bank.open_account("Cy")
        self.bank.close_account(c)
        calls = [(self.bank.deposit, c, 5), (self.bank.withdraw, c, 5), (self.bank.transfer, c, a, 5),
                 (self.bank.transfer, a, c, 5), (self.bank.close_account, c)]
        for call, *args in calls:
            with self.subTest(call=call.__name__, args=args):
                with self.assertRaises(AccountClosed):
                    call(*args)
        self.assertEqual((self.bank.balance(a), self.bank.balance(c)), (1000, 0))
        self.assertEqual(self.bank.history(a), [("deposit", 1000)])
        self.assertEqual(self.bank.history(c), [])

    def test_ids_continue_after_closing(self):
        a = self.bank.open_account("Ada")
        self.bank.close_account(a)
        self.assertEqual(self.bank.open_account("Ada"), "ACC-0002")

    # listing

    def test_accounts_sorted_and_by_owner(self):
        for owner in ["Bob", "Ada", "Bob", "Cy"]:
            self.bank.open_account(owner)
        self.assertEqual(self.bank.accounts(), ["ACC-0001", "ACC-0002", "ACC-0003", "ACC-0004"])
        self.assertEqual(self.bank.accounts("Bob"), ["ACC-0001", "ACC-0003"])
        self.assertEqual(self.bank.accounts(owner="Ada"), ["ACC-0002"])
        self.assertEqual(self.bank.accounts("Zed"), [])
        self.bank.close_account("ACC-0003")
        self.assertEqual(self.bank.accounts("Bob"), ["ACC-0001"])
        self.assertEqual(self.bank.accounts(), ["ACC-0001", "ACC-0002", "ACC-0004"])

    def test_exception_types(self):
        for exception in (InsufficientFunds, AccountClosed):
            self.assertTrue(issubclass(exception, Exception))


if __name__ == "__main__":
    unittest.main()
