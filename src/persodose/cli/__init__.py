"""persodose.cli"""
