"""The Bank class and its exceptions."""


class UnknownAccount(KeyError):
    """No account has this id."""


class InsufficientFunds(Exception):
    """The balance does not cover the amount."""


class AccountClosed(Exception):
    """The account is closed."""


def _check_amount(amount):
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise ValueError("amount must be a positive integer")


class Bank:
    def __init__(self):
        self._accounts = {}

    def open_account(self, owner, initial=0):
        if not owner.strip():
            raise ValueError("owner must not be empty")
        if isinstance(initial, bool) or not isinstance(initial, int) or initial < 0:
            raise ValueError("initial balance must be a non-negative integer")
        account_id = f"ACC-{len(self._accounts) + 1:04d}"
        self._accounts[account_id] = {"owner": owner, "balance": initial, "history": [], "open": True}
        if initial > 0:
            self._accounts[account_id]["history"].append(("deposit", initial))
        return account_id

    def _get(self, account_id):
        if account_id not in self._accounts:
            raise UnknownAccount(account_id)
        return self._accounts[account_id]

    def _open(self, account_id):
        account = self._get(account_id)
        if not account["open"]:
            raise AccountClosed(account_id)
        return account

    def _check_funds(self, account_id, amount):
        balance = self._accounts[account_id]["balance"]
        if amount > balance:
            raise InsufficientFunds(f"{account_id} has only {balance}")

    def balance(self, account_id):
        return self._get(account_id)["balance"]

    def history(self, account_id):
        return list(self._get(account_id)["history"])

    def deposit(self, account_id, amount):
        _check_amount(amount)
        account = self._open(account_id)
        account["balance"] += amount
        account["history"].append(("deposit", amount))

    def withdraw(self, account_id, amount):
        _check_amount(amount)
        account = self._open(account_id)
        self._check_funds(account_id, amount)
        account["balance"] -= amount
        account["history"].append(("withdraw", amount))

    def transfer(self, from_id, to_id, amount):
        _check_amount(amount)
        source = self._open(from_id)
        target = self._open(to_id)
        if from_id == to_id:
            raise ValueError("cannot transfer to the same account")
        self._check_funds(from_id, amount)
        source["balance"] -= amount
        target["balance"] += amount
        source["history"].append(("transfer_out", amount))
        target["history"].append(("transfer_in", amount))

    def close_account(self, account_id):
        account = self._open(account_id)
        if account["balance"] != 0:
            raise ValueError("balance must be zero to close")
        account["open"] = False

    def accounts(self, owner=None):
        return sorted(
            account_id
            for account_id, account in self._accounts.items()
            if account["open"] and (owner is None or account["owner"] == owner)
        )

    def total(self):
        return sum(account["balance"] for account in self._accounts.values())
