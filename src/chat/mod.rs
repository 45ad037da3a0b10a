//! Chat: conversations, messages and recovery. This capability is being built; today it holds
//! the message DTO, whose rules the hardening capability fixes and the chat handlers will use.

pub mod dto;
