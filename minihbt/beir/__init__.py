"""beir"""
