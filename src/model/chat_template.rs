//! Chat templates: the Jinja template from `tokenizer.chat_template` (or `tokenizer_config.json`),
//! rendered with minijinja plus Python-compat methods, as HF `apply_chat_template` does.

use crate::error::{Error, Result};
use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_trim_blocks(false);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Render `messages`, ending with the assistant prefix when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::ChatTemplate("no messages to render".into()));
        }
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        t.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| Error::ChatTemplate(e.to_string()))
    }
}

/// ChatML, the fallback for models without a template (llama.cpp does the same).
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_generation_prompt() -> Result<()> {
        let t = ChatTemplate::new(CHATML, "", "")?;
        let s = t.render(
            &[Message {
                role: "user".into(),
                content: "hi".into(),
            }],
            true,
        )?;
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        Ok(())
    }

    #[test]
    fn raise_exception_is_an_error_not_a_panic() -> Result<()> {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "")?;
        let e = t.render(
            &[Message {
                role: "user".into(),
                content: "x".into(),
            }],
            true,
        );
        assert!(e.is_err_and(|e| e.to_string().contains("roles must alternate")));
        Ok(())
    }
}
