//! `gleitzeit init NAME --type python|llm|mixed`: a runnable workflow template.

use crate::output::{self, Paint};
use clap::{Args, ValueEnum};
use gleitzeit_core::{ErrorCode, GzError};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TemplateKind {
    Python,
    Llm,
    Mixed,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Workflow name; the file NAME.yaml is written (NAME itself if it ends in .yaml)
    pub name: String,
    /// What the template does
    #[arg(long = "type", short = 't', value_enum, default_value = "python")]
    pub kind: TemplateKind,
    /// Overwrite an existing file
    #[arg(long)]
    pub force: bool,
}

const PYTHON: &str = r#"name: "{name}"
description: "Generate numbers in Python, then summarise them"
inputs:
  count: 5
tasks:
  - id: generate
    method: python/execute
    parameters:
      code: |
        import random
        numbers = [random.randint(1, 100) for _ in range(inputs["count"])]
        print(f"Generated: {numbers}")
        result = {"numbers": numbers}
    timeout: 30

  - id: summarise
    method: python/execute
    dependencies: [generate]
    parameters:
      code: |
        data = ${generate.result}
        total = sum(data["numbers"])
        result = {"total": total, "average": total / len(data["numbers"])}
        print(f"Sum: {total}, Average: {result['average']}")
    retry:
      max_attempts: 3
      base_delay: 1.0
      strategy: exponential

  - id: stats
    method: analyze_numbers
    dependencies: [generate]
    parameters:
      numbers: "${generate.result.numbers}"
"#;

const LLM: &str = r#"name: "{name}"
description: "Ask a model for an outline, then expand it"
defaults:
  model: llama3.2
inputs:
  topic: "workflow orchestration"
tasks:
  - id: outline
    method: llm/chat
    parameters:
      messages:
        - role: user
          content: "Write a three-point outline about ${inputs.topic}."
      temperature: 0.7
      max_tokens: 200

  - id: expand
    method: llm/chat
    dependencies: [outline]
    parameters:
      messages:
        - role: user
          content: "Expand this outline into a short paragraph: ${outline}"
      max_tokens: 400
"#;

const MIXED: &str = r#"name: "{name}"
description: "Python prepares data, a model writes about it, Python checks the answer"
defaults:
  model: llama3.2
tasks:
  - id: data
    method: python/execute
    parameters:
      code: |
        import statistics
        values = [12, 7, 31, 18, 25]
        result = {"values": values, "mean": statistics.mean(values)}

  - id: describe
    method: llm/chat
    dependencies: [data]
    parameters:
      prompt: "In one sentence, describe these numbers: ${data.result.values} (mean ${data.result.mean})."
      max_tokens: 120

  - id: check
    method: python/execute
    dependencies: [describe]
    parameters:
      code: |
        text = ${describe}
        result = {"words": len(text.split()), "mentions_mean": "mean" in text.lower()}
        print(f"Model wrote {result['words']} words")
"#;

pub fn run(args: InitArgs) -> Result<u8, GzError> {
    let file = if args.name.ends_with(".yaml") || args.name.ends_with(".yml") {
        PathBuf::from(&args.name)
    } else {
        PathBuf::from(format!("{}.yaml", args.name))
    };
    if file.exists() && !args.force {
        return Err(GzError::new(
            ErrorCode::FileExists,
            format!("{} already exists", file.display()),
        )
        .at(file.display().to_string()));
    }
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.name.clone())
        .replace('"', "'");
    let template = match args.kind {
        TemplateKind::Python => PYTHON,
        TemplateKind::Llm => LLM,
        TemplateKind::Mixed => MIXED,
    };
    std::fs::write(&file, template.replace("{name}", &name)).map_err(|e| {
        GzError::new(
            ErrorCode::FileWriteFailed,
            format!("cannot write {}: {e}", file.display()),
        )
        .at(file.display().to_string())
    })?;
    let paint = Paint(output::color_stdout());
    println!("{} wrote {}", paint.green("✓"), file.display());
    println!("  run it with: gleitzeit run {}", file.display());
    if !matches!(args.kind, TemplateKind::Python) {
        println!(
            "  (LLM tasks need a model endpoint: set OLLAMA_HOST, or the `llm:` section (`llm.endpoints`) in the config)"
        );
    }
    Ok(output::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_core::parse::{load, MethodCatalog, CORE_METHODS};

    struct Catalog;
    impl MethodCatalog for Catalog {
        fn has_method(&self, m: &str) -> bool {
            CORE_METHODS.contains(&m)
        }
        fn has_function(&self, n: &str) -> bool {
            n == "analyze_numbers"
        }
        fn all_names(&self) -> Vec<String> {
            vec![]
        }
    }

    #[test]
    fn every_template_validates() {
        for template in [PYTHON, LLM, MIXED] {
            let text = template.replace("{name}", "t");
            if let Err(problems) = load(&text, "t.yaml", &Catalog, &Default::default()) {
                panic!("{problems:#?}");
            }
        }
    }
}
