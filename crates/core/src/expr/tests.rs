use super::*;
use crate::refs::TaskView;
use serde_json::json;
use std::collections::HashMap;

struct TestScope {
    tasks: HashMap<&'static str, Value>,
    inputs: serde_json::Map<String, Value>,
}

impl Scope for TestScope {
    fn task(&self, id: &str) -> Option<TaskView<'_>> {
        self.tasks.get(id).map(|record| TaskView {
            record,
            primary: "result",
        })
    }
    fn input(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name)
    }
}

fn names() -> Vec<String> {
    ["check", "score", "tags", "skipped task"]
        .map(String::from)
        .to_vec()
}

fn scope() -> TestScope {
    let mut tasks = HashMap::new();
    tasks.insert("check", json!({"result": true}));
    tasks.insert("score", json!({"result": {"value": 7.5, "label": "good"}}));
    tasks.insert("tags", json!({"result": ["rust", "yaml"]}));
    tasks.insert("skipped task", json!({"result": null}));
    let inputs = json!({"n": 3, "name": "Ada", "empty": ""});
    TestScope {
        tasks,
        inputs: inputs.as_object().cloned().unwrap_or_default(),
    }
}

fn eval(text: &str) -> Result<bool, GzError> {
    let expr = parse(text, &names()).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    Ok(truthy(&expr.eval(&scope())?))
}

fn yes(text: &str) {
    assert_eq!(eval(text).ok(), Some(true), "{text}");
}

fn no(text: &str) {
    assert_eq!(eval(text).ok(), Some(false), "{text}");
}

#[test]
fn comparisons_literals_and_references() {
    yes("${check.result} == true");
    yes("${check} == true");
    no("${check.result} != true");
    yes("${score.result.value} > 7");
    yes("${score.value} >= 7.5");
    no("${score.value} < 7.5");
    yes("${score.value} <= 7.5");
    yes("${inputs.n} == 3.0");
    yes("${inputs.name} == 'Ada'");
    yes("${inputs.name} == \"Ada\"");
    yes("'abc' < 'abd'");
    yes("-2 < -1");
}

#[test]
fn boolean_logic_precedence_and_parentheses() {
    yes("${check} and ${inputs.n} > 2");
    yes("false or true and true");
    no("(false or true) and false");
    yes("not false and true");
    no("not (false or true)");
    yes("!${inputs.empty}");
    yes("${check} && (${inputs.n} == 1 || ${inputs.n} == 3)");
}

#[test]
fn membership_in_lists_strings_and_objects() {
    yes("'rust' in ${tags.result}");
    no("'go' in ${tags}");
    yes("'go' not in ${tags}");
    yes("'d' in ${inputs.name}");
    yes("'label' in ${score}");
    yes("${inputs.n} in [1, 2, 3]");
    no("${inputs.n} in []");
}

#[test]
fn truthiness() {
    yes("${check}");
    no("${skipped task.result}");
    no("${inputs.empty}");
    no("0");
    yes("'x'");
    no("[]");
    yes("${tags}");
    no("null");
}

#[test]
fn values_of_different_types_are_unequal_but_do_not_order() {
    no("'3' == 3");
    yes("null != 0");
    let error = eval("'3' < 4").unwrap_err();
    assert_eq!(error.code, ErrorCode::ConditionFailed);
    assert!(
        error
            .message
            .contains("two numbers or two texts, not text and number"),
        "{}",
        error.message
    );
    let error = eval("1 in 5").unwrap_err();
    assert_eq!(error.code, ErrorCode::ConditionFailed);
    let error = eval("${skipped task.result} > 1").unwrap_err();
    assert_eq!(error.code, ErrorCode::ConditionFailed);
}

#[test]
fn missing_field_is_the_reference_error_unless_defaulted() {
    let error = eval("${score.result.nope} == 1").unwrap_err();
    assert_eq!(error.code, ErrorCode::ReferenceFieldMissing);
    yes("${score.result.nope | default(1)} == 1");
}

#[test]
fn syntax_errors_carry_offsets() {
    let problem = |text: &str| {
        let e = parse(text, &names()).expect_err(text);
        format!("{}: {}", e.offset, e.message)
    };
    assert_eq!(
        problem("${check} = true"),
        "9: unexpected `=` (compare with `==`)"
    );
    assert_eq!(
        problem("${check} == "),
        "12: expression ends where a value is expected"
    );
    assert_eq!(problem("(${check}"), "9: missing `)`");
    assert_eq!(
        problem("yes == true"),
        "0: unexpected word `yes`; references are written ${yes…} and text is quoted"
    );
    assert_eq!(
        problem("1 < 2 < 3"),
        "6: comparisons do not chain; use `and` between them (found `<`)"
    );
    assert_eq!(problem("'open"), "0: text is missing its closing quote");
    assert!(problem("${nobody.result}").contains("names no task or input"));
    assert_eq!(problem(""), "0: condition is empty");
    assert_eq!(
        problem("true true"),
        "5: unexpected text after the end of the condition (missing `and` / `or`?)"
    );
}

#[test]
fn hostile_input_is_refused_not_a_crash() {
    let deep = format!("{}true{}", "(".repeat(5000), ")".repeat(5000));
    assert!(parse(&deep, &names()).is_err());
    let nots = "not ".repeat(1000) + "true";
    assert!(parse(&nots, &names()).is_err());
    let lists = "[".repeat(1000);
    assert!(parse(&lists, &names()).is_err());
    for text in [
        "${", "'\\", "\"é", "1e999", "--1", "]", ")", "é", "$", "${check", "1_",
    ] {
        let _ = parse(text, &names()).map(|e| e.eval(&scope()));
    }
}

#[test]
fn references_are_listed_for_validation() {
    let expr = parse("${check} and 'x' in ${tags} or not ${inputs.n}", &names()).unwrap();
    let mut found = Vec::new();
    expr.references(&mut found);
    let texts: Vec<&str> = found.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, ["check", "tags", "inputs.n"]);
}
