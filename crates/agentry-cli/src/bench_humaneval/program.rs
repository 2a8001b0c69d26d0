//! The pure text work of `bench humaneval`: the code taken from a model's
//! answer, the program it makes with the problem's prompt, the check module
//! that runs HumanEval's own test on it, and the requirement the crew gets.
//!
//! HumanEval checks a completion by running `prompt + completion + test +
//! check(entry_point)` in one namespace; the check module keeps that one
//! namespace (the test may call helpers the prompt defines, such as
//! `encode_cyclic` or `poly`) and wraps the final call in one unittest
//! case, so the sandbox reports it like any other test run.

use super::problems::Problem;

/// The check module's name: the file the sandbox's overlay writes at the
/// root of the checkout, and the module [`CHECK_COMMAND`] runs.
pub const CHECK_FILE: &str = "humaneval_check.py";

/// Runs the check module's one test.
pub const CHECK_COMMAND: [&str; 5] = ["python3", "-m", "unittest", "-v", "humaneval_check"];

/// The package the crew's code must live in (harness mode).
pub const PACKAGE: &str = "solution";

/// The code of an answer: its first fenced block (```` ```python ```` or a
/// bare fence; an unclosed fence runs to the end), else the whole answer.
pub fn extract_code(answer: &str) -> String {
    let mut lines = answer.lines();
    let mut found = false;
    for line in lines.by_ref() {
        if line.trim_start().starts_with("```") {
            found = true;
            break;
        }
    }
    if !found {
        return answer.trim_matches('\n').to_string();
    }
    let block: Vec<&str> = lines
        .take_while(|line| !line.trim_start().starts_with("```"))
        .collect();
    block.join("\n")
}

/// Whether `code` defines `name` at module level.
fn defines(code: &str, name: &str) -> bool {
    code.lines().any(|line| {
        let rest = line
            .strip_prefix("async def ")
            .or_else(|| line.strip_prefix("def "));
        rest.is_some_and(|rest| {
            rest.strip_prefix(name)
                .is_some_and(|after| after.trim_start().starts_with('('))
        })
    })
}

/// The program a direct answer makes. An answer that defines the entry
/// point at module level follows the whole prompt (whose imports and
/// helpers it may use; its own definition replaces the prompt's stub). An
/// answer that is only the body completes the prompt, as HumanEval's own
/// harness does (`prompt + completion`); a body written without its
/// indentation gets the function's four spaces.
pub fn candidate_program(problem: &Problem, code: &str) -> String {
    let mut program = problem.prompt.clone();
    if !program.ends_with('\n') {
        program.push('\n');
    }
    if defines(code, &problem.entry_point) {
        program.push('\n');
        program.push_str(code);
    } else {
        let starts_flush = code
            .lines()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| !l.starts_with([' ', '\t']));
        if starts_flush {
            for line in code.lines() {
                if !line.trim().is_empty() {
                    program.push_str("    ");
                }
                program.push_str(line);
                program.push('\n');
            }
        } else {
            program.push_str(code);
        }
    }
    if !program.ends_with('\n') {
        program.push('\n');
    }
    program
}

/// The program of harness mode: the prompt (its imports, helpers the test
/// may call, the stub), then the crew's function imported over the stub
/// from the package the requirement pins.
pub fn harness_program(problem: &Problem) -> String {
    let mut program = problem.prompt.clone();
    if !program.ends_with('\n') {
        program.push('\n');
    }
    program.push_str(&format!(
        "\n\nfrom {PACKAGE} import {}  # the crew's code, over the stub above\n",
        problem.entry_point
    ));
    program
}

/// The check module: `program`, HumanEval's test, and one unittest case
/// that calls `check(<entry_point>)`.
pub fn check_module(problem: &Problem, program: &str) -> String {
    format!(
        "import unittest\n\n# --- the candidate\n{program}\n\n# --- HumanEval's test ({id})\n{test}\n\n\
         class HumanEvalCheck(unittest.TestCase):\n    def test_check(self):\n        check({entry})\n\n\n\
         if __name__ == \"__main__\":\n    unittest.main()\n",
        id = problem.task_id,
        test = problem.test.trim_end(),
        entry = problem.entry_point,
    )
}

/// The chat prompt of direct mode: the system message and the user's.
pub fn direct_prompt(problem: &Problem) -> (String, String) {
    (
        "You are an expert Python programmer. Complete the Python function the user gives. \
         Answer with the complete function (its imports and any helper it needs) in one \
         ```python fenced block, and nothing else."
            .to_string(),
        format!(
            "Complete this function:\n\n```python\n{}\n```",
            problem.prompt.trim_end()
        ),
    )
}

/// The code host's name of a problem's repository (`humaneval-12`).
pub fn repository_name(problem: &Problem) -> String {
    let number: String = problem
        .task_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
        .trim_start_matches("humaneval")
        .to_string();
    format!("humaneval-{number}")
}

/// The requirement of harness mode: the public interface pinned (package,
/// import, signature and docstring quoted from the prompt), nothing of
/// HumanEval's test.
pub fn requirement(problem: &Problem) -> String {
    let entry = &problem.entry_point;
    let helpers = problem
        .prompt
        .lines()
        .filter(|l| l.starts_with("def "))
        .count()
        > 1;
    let mut text = format!(
        "# `{entry}`: a Python function\n\n\
         I need the Python function `{entry}` described below, correct for every input its \
         docstring allows (the examples in the docstring are part of the specification).\n\n\
         ## Interface (must match exactly)\n\n\
         Repository `{repo}`; Python package `{PACKAGE}` at the repository root, standard \
         library only, exporting the function (`from {PACKAGE} import {entry}`): define it in \
         `{PACKAGE}/__init__.py` or in a module of the package that `__init__.py` imports it \
         from. Its signature and behaviour, exactly as given:\n\n\
         ```python\n{prompt}\n```\n",
        repo = repository_name(problem),
        prompt = problem.prompt.trim_matches('\n'),
    );
    if helpers {
        text.push_str(&format!(
            "\nThe other functions shown above are part of the interface too: define them \
             in the same module as `{entry}`, exactly as given.\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem() -> Problem {
        Problem {
            task_id: "HumanEval/12".into(),
            prompt: "from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    \"\"\" Sum.\n    >>> add(1, 2)\n    3\n    \"\"\"\n".into(),
            entry_point: "add".into(),
            test: "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n".into(),
        }
    }

    #[test]
    fn the_first_fenced_block_is_the_code_else_the_whole_answer() {
        let check = |answer: &str, code: &str| assert_eq!(extract_code(answer), code, "{answer}");
        check(
            "Here:\n```python\ndef f():\n    return 1\n```\nDone.",
            "def f():\n    return 1",
        );
        check("```\nx = 1\n```\n```python\ny = 2\n```", "x = 1");
        check(
            "```python\ndef f():\n    return 1\n",
            "def f():\n    return 1",
        );
        check("\n    return a + b\n", "    return a + b");
    }

    #[test]
    fn a_whole_function_follows_the_prompt_and_a_body_completes_it() {
        let p = problem();
        let whole = candidate_program(&p, "def add(a, b):\n    return a + b");
        assert!(whole.starts_with(&p.prompt), "{whole}");
        assert!(
            whole.ends_with("\ndef add(a, b):\n    return a + b\n"),
            "{whole}"
        );
        let body = candidate_program(&p, "    return a + b");
        assert_eq!(body, format!("{}    return a + b\n", p.prompt));
        // A body written flush gets the function's indentation.
        let flush = candidate_program(&p, "s = a + b\n\nreturn s");
        assert_eq!(
            flush,
            format!("{}    s = a + b\n\n    return s\n", p.prompt)
        );
        // `add_all` is not `add`: the answer is taken for a body.
        assert!(!defines("def add_all(x):\n    pass", "add"));
        assert!(defines("async def add (a, b):\n    pass", "add"));
    }

    #[test]
    fn the_check_module_runs_the_test_on_the_candidate_in_one_namespace() {
        let p = problem();
        let module = check_module(&p, &candidate_program(&p, "    return a + b"));
        assert!(module.starts_with("import unittest\n"), "{module}");
        let program = module.find("return a + b").unwrap();
        let test = module.find("def check(candidate)").unwrap();
        let call = module.find("        check(add)\n").unwrap();
        assert!(program < test && test < call, "{module}");
    }

    #[test]
    fn the_harness_imports_the_crews_function_over_the_prompts_stub() {
        let p = problem();
        let program = harness_program(&p);
        assert!(program.starts_with(&p.prompt));
        assert!(
            program.contains("\nfrom solution import add  #"),
            "{program}"
        );
    }

    #[test]
    fn the_requirement_pins_the_interface_and_quotes_the_prompt_but_not_the_test() {
        let p = problem();
        let text = requirement(&p);
        assert!(text.contains("Repository `humaneval-12`"), "{text}");
        assert!(text.contains("`from solution import add`"), "{text}");
        assert!(text.contains(p.prompt.trim_matches('\n')), "{text}");
        assert!(!text.contains("check(candidate)"), "{text}");
        assert!(!text.contains("other functions"), "{text}");
        let mut two = problem();
        two.prompt = format!("def helper(x):\n    return x\n\n\n{}", two.prompt);
        assert!(requirement(&two).contains("other functions shown above"));
    }
}
