"""persodose.physics"""
